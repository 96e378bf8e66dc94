"""Classify images by a majority vote of their k nearest images in a labelled reference folder.

    python -m evaluation.classify --checkpoint PATH --reference REF --images NEW [--k 5] [--out predictions]

REF is laid out REF/<class>/.../<image>. Images of NEW in class sub-folders (NEW/<class>/<image>)
are labelled and get a per-class report (precision, recall, F1: sklearn's classification_report);
images directly in NEW are only predicted. Ties between classes go to the class whose nearest
member is nearer. Writes <out>.csv (path, prediction, votes for it, true class) and, when some
images are labelled, <out>_report.txt.
"""
import csv

import numpy as np
from sklearn.metrics import classification_report

from errors import CommandParser, UserError, run_command
from evaluation import networks
from evaluation.export import add_network_flags, device_of, embed_images, find_images
from evaluation.neighbours import search
from evaluation.voting import majority_vote


def classify(query_features, reference_features, reference_classes, k):
    """(predicted class, number of the k votes it got) per query."""
    class_names, reference_labels = np.unique(np.asarray(reference_classes), return_inverse=True)
    neighbour_labels = reference_labels[search(query_features, reference_features, k)]
    predicted = majority_vote(neighbour_labels, 1)[:, 0]
    votes = (neighbour_labels == predicted[:, None]).sum(1)
    return class_names[predicted], votes


def run(opt):
    if opt.k < 1:
        raise UserError(f"--k must be at least 1, got {opt.k}")
    checkpoint = networks.load(opt.checkpoint, opt.arch, opt.embed_dim)
    device = device_of(opt.gpu)
    reference_paths, reference_classes = find_images(opt.reference)
    if "" in reference_classes:
        unlabelled = reference_paths[reference_classes.index("")]
        raise UserError(f"{unlabelled} lies directly in --reference {opt.reference}; reference images must lie "
                        "in class folders, REF/<class>/<image>")
    paths, true_classes = find_images(opt.images)
    reference_features = embed_images(checkpoint, reference_paths, device, opt.bs, opt.kernels)
    features = embed_images(checkpoint, paths, device, opt.bs, opt.kernels)
    predicted, votes = classify(features, reference_features, reference_classes, opt.k)
    k = min(opt.k, len(reference_paths))
    labelled = np.array([name != "" for name in true_classes])
    report = None
    if labelled.any():
        truth = np.asarray(true_classes)[labelled]
        report = (f"{labelled.sum()} labelled images of {opt.images}, majority vote of the {k} nearest of "
                  f"{len(reference_paths)} reference images in {opt.reference}\n\n"
                  + classification_report(truth, predicted[labelled], zero_division=0))
    try:
        with open(f"{opt.out}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "prediction", f"votes_of_{k}", "class"])
            writer.writerows(zip(paths, predicted, votes, true_classes))
        if report is not None:
            with open(f"{opt.out}_report.txt", "w") as handle:
                handle.write(report)
    except OSError as error:
        raise UserError(f"cannot write {error.filename or opt.out}: {error.strerror}; choose another --out") from None
    if report is not None:
        print(report)
    print(f"predictions of {len(paths)} images written to {opt.out}.csv"
          + (f", report to {opt.out}_report.txt" if report is not None else ""))
    return predicted, report


def main(argv=None):
    parser = CommandParser(command="python -m evaluation.classify", description=__doc__.split("\n\n")[0])
    add_network_flags(parser)
    parser.add_argument("--reference", required=True, help="labelled images, REF/<class>/<image>")
    parser.add_argument("--images", required=True, help="images to classify, NEW/<image> or NEW/<class>/<image>")
    parser.add_argument("--k", type=int, default=5, help="neighbours that vote")
    parser.add_argument("--out", default="predictions", help="output prefix: <out>.csv, <out>_report.txt")
    run_command(run, parser.parse_args(argv))


if __name__ == "__main__":
    main()
