"""A searchable faiss index of a folder of images, embedded by a trained network, and its search.

    python -m evaluation.index build --checkpoint CKPT --images GALLERY --out INDEX [--index flat|ivf|hnsw]
    python -m evaluation.index search --index INDEX --images QUERIES --k 10 [--out results.csv] [--html PAGE]

INDEX is a folder: index.faiss (faiss.write_index) and index.json (the image paths, their classes,
the checkpoint, its arch and embed_dim, a fingerprint of its weights, the index kind). Images are
found as evaluation.export finds them; the class of FOLDER/<class>/.../<image> is <class>.

build embeds the images in batches and adds each batch to the index as it comes, so memory is the
index's, whatever the number of images. The distance is the euclidean one, as in the codebase's own
evaluation (evaluation.neighbours): `flat` (default) is exact, faiss's IndexFlatL2. `ivf`
(IndexIVFFlat, --nlist lists, searched with --nprobe) must be trained first: on a random sample of
up to --train_size images, embedded once for that, before every image is embedded and added.
`hnsw` (IndexHNSWFlat, --hnsw_m links a node, searched with --ef_search) needs no training.

search embeds the queries in batches with the index's checkpoint (or --checkpoint, which must hold
the same weights) and writes the k nearest gallery images of each to a CSV: query, rank, gallery
image, distance (euclidean), classes and whether they match. When the queries and the indexed
images lie in class folders it prints Recall@1 and Recall@k (a query counts when one of its k
nearest has its class) and writes them to <out>.json. A query that is itself in the index is not
left out: it finds itself first.
--html PAGE writes a static page of the results (evaluation.retrieval_page).
"""
import argparse
import csv
import hashlib
import json
import os
import sys

import faiss
import numpy as np
import torch

from errors import CommandParser, DefaultsFormatter, UserError, counted, first_line, run_command
from evaluation import networks
from evaluation.export import add_network_flags, device_of, embedded_batches, find_images

KINDS = ("flat", "ivf", "hnsw")
INDEX_FILE, META_FILE = "index.faiss", "index.json"
FORMAT = "obd-sd image index 1"


def fingerprint(network):
    """A hash of the network's weights (every tensor of its state dict, by name)."""
    digest = hashlib.sha256()
    for name, tensor in network.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def new_index(kind, dim, nlist=100, hnsw_m=32):
    """An empty faiss index of `kind` (flat, ivf, hnsw) for euclidean distances."""
    if kind == "flat":
        return faiss.IndexFlatL2(dim)
    if kind == "ivf":
        return faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, nlist, faiss.METRIC_L2)
    if kind == "hnsw":
        return faiss.IndexHNSWFlat(dim, hnsw_m)
    raise ValueError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")


def index_batches(batches, dim, kind="flat", nlist=100, hnsw_m=32, training=None):
    """A faiss index holding every row of `batches` (an iterable of N_i x dim float32 arrays), in
    order, added batch by batch. An IVF index is first trained on `training` (a sample of vectors),
    with at most as many lists as training vectors."""
    if kind == "ivf":
        if training is None or len(training) == 0:
            raise ValueError("an IVF index needs training vectors")
        index = new_index(kind, dim, min(nlist, len(training)), hnsw_m)
        index.train(np.ascontiguousarray(training, dtype=np.float32))
    else:
        index = new_index(kind, dim, nlist, hnsw_m)
    for batch in batches:
        index.add(np.ascontiguousarray(batch, dtype=np.float32))
    return index


def set_search_parameters(index, nprobe=16, ef_search=64):
    if isinstance(index, faiss.IndexIVF):
        index.nprobe = min(nprobe, index.nlist)
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = ef_search


def search_index(index, queries, k, nprobe=16, ef_search=64):
    """(euclidean distances, gallery rows), len(queries) x min(k, index.ntotal), nearest first;
    row -1 where an approximate index found fewer than k."""
    set_search_parameters(index, nprobe, max(ef_search, k))
    squared, found = index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, index.ntotal))
    return np.sqrt(np.maximum(squared, 0)), found


def build(checkpoint, checkpoint_path, images, out, kind="flat", nlist=100, hnsw_m=32, train_size=10000,
          device="cpu", batch_size=64, workers=0, seed=0):
    """Embed every image under `images` into a new index folder `out`; its metadata."""
    if kind not in KINDS:
        raise UserError(f"unknown --index {kind}; choose one of {', '.join(KINDS)}")
    for flag, value in (("--nlist", nlist), ("--hnsw_m", hnsw_m), ("--train_size", train_size)):
        if value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    paths, classes = find_images(images)
    training = None
    if kind == "ivf":
        sample = np.sort(np.random.default_rng(seed).permutation(len(paths))[:train_size])
        training = np.concatenate(list(embedded_batches(checkpoint, [paths[i] for i in sample], device, batch_size,
                                                        workers, "embedding the IVF training sample")))
    batches = embedded_batches(checkpoint, paths, device, batch_size, workers, "embedding and indexing")
    index = index_batches(batches, checkpoint.embed_dim, kind, nlist, hnsw_m, training)
    meta = {"format": FORMAT, "kind": kind, "count": len(paths), "images": os.path.abspath(images),
            "checkpoint": os.path.abspath(checkpoint_path), "arch": checkpoint.arch, "embed_dim": checkpoint.embed_dim,
            "fingerprint": fingerprint(checkpoint.network),
            "nlist": int(index.nlist) if kind == "ivf" else None, "hnsw_m": hnsw_m if kind == "hnsw" else None,
            "paths": [os.path.abspath(path) for path in paths], "classes": classes}
    try:
        os.makedirs(out, exist_ok=True)
        # written aside, then renamed: an interrupted build never leaves a half-written file
        faiss.write_index(index, os.path.join(out, INDEX_FILE + ".tmp"))
        with open(os.path.join(out, META_FILE + ".tmp"), "w") as handle:
            json.dump(meta, handle)
        for name in (INDEX_FILE, META_FILE):
            os.replace(os.path.join(out, name + ".tmp"), os.path.join(out, name))
    except (OSError, RuntimeError) as error:
        raise UserError(f"cannot write the index into {out}: {getattr(error, 'strerror', None) or error}; "
                        "choose another --out") from None
    return meta


def open_index(folder):
    """(faiss index, metadata) of an index folder written by `build`."""
    meta_path, index_path = os.path.join(folder, META_FILE), os.path.join(folder, INDEX_FILE)
    hint = "give a folder written by python -m evaluation.index build"
    if not os.path.isdir(folder) or not os.path.isfile(meta_path) or not os.path.isfile(index_path):
        raise UserError(f"{folder} is not an index (no {INDEX_FILE} and {META_FILE} in it); {hint}")
    try:
        with open(meta_path) as handle:
            meta = json.load(handle)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError("not this codebase's index")
        index = faiss.read_index(index_path)
    except (OSError, ValueError, RuntimeError) as error:
        raise UserError(f"{folder} is not a readable index ({first_line(error, 120)}); {hint}") from None
    if index.ntotal != len(meta["paths"]) or index.d != meta["embed_dim"]:
        raise UserError(f"{folder}: {INDEX_FILE} and {META_FILE} disagree ({index.ntotal} vectors of {index.d} "
                        f"dimensions, {len(meta['paths'])} paths of {meta['embed_dim']}); rebuild it")
    return index, meta


def check_network(meta, checkpoint, checkpoint_path, folder, given=True):
    """A UserError unless `checkpoint` is the network the index was built with; `given`: the
    checkpoint came from --checkpoint, not from the index's own record."""
    command = (f"python -m evaluation.index build --checkpoint {checkpoint_path} --images {meta['images']} "
               f"--out {folder}")
    rebuild = f"search with the index's checkpoint (drop --checkpoint) or rebuild it: {command}"
    if not given:
        # the file the index names is no longer the network that embedded the index (overwritten,
        # or trained further): dropping --checkpoint cannot help
        changed = f"{checkpoint_path} has changed since index {folder} was built"
        rebuild = (f"rebuild the index: {command}; or search with --checkpoint FILE holding the weights it was "
                   "built with")
        if checkpoint.embed_dim != meta["embed_dim"] or fingerprint(checkpoint.network) != meta["fingerprint"]:
            raise UserError(f"{changed} (its weights are not those of the {meta['embed_dim']}-d embeddings indexed); "
                            f"{rebuild}")
        return
    if checkpoint.embed_dim != meta["embed_dim"]:
        raise UserError(f"index {folder} holds {meta['embed_dim']}-d embeddings of {meta['checkpoint']}, but "
                        f"{checkpoint_path} embeds in {checkpoint.embed_dim} dimensions; {rebuild}")
    if fingerprint(checkpoint.network) != meta["fingerprint"]:
        raise UserError(f"index {folder} was built by another network ({meta['checkpoint']}, {meta['arch']}) than "
                        f"{checkpoint_path}; {rebuild}")


def recall(query_classes, gallery_classes, found, ks):
    """{"recall@k": fraction of queries with a same-class image among their k nearest}, over the
    queries that have a class."""
    gallery = np.asarray(list(gallery_classes) + [""], dtype=object)  # row -1: nothing found
    labelled = np.array([name != "" for name in query_classes])
    hits = (gallery[found[labelled]] == np.asarray(query_classes, dtype=object)[labelled][:, None])
    return {f"recall@{k}": float(hits[:, :k].any(1).mean()) if len(hits) else float("nan") for k in ks}


def search(index, meta, checkpoint, images, k, out, html_folder=None, nprobe=16, ef_search=64, device="cpu",
           batch_size=64, workers=0, explained=0):
    """Search the k nearest indexed images of every image under `images`; writes `out` (CSV), its
    recall JSON when the queries have classes, and the page `html_folder`, with the heat maps of the
    first `explained` queries and their nearest image. Returns (distances, rows, recall or None)."""
    paths, classes = find_images(images)
    k_found = min(k, index.ntotal)
    distances, found = np.empty((len(paths), k_found), np.float32), np.empty((len(paths), k_found), np.int64)
    start = 0
    for batch in embedded_batches(checkpoint, paths, device, batch_size, workers, "embedding and searching"):
        distances[start:start + len(batch)], found[start:start + len(batch)] = search_index(index, batch, k,
                                                                                            nprobe, ef_search)
        start += len(batch)
    gallery_paths, gallery_classes = meta["paths"], meta["classes"]
    labelled = any(classes)
    if labelled and not any(gallery_classes):
        # every query would count as a miss: a recall of 0 that says nothing about the network
        print(f"note: no recall: the indexed images have no classes (they lie directly in {meta['images']}, not in "
              "class folders <folder>/<class>/<image>); rebuild the index from class folders to measure it",
              file=sys.stderr)
        labelled = False
    elif labelled:
        unmatched = sorted({name for name in classes if name} - set(gallery_classes))
        if unmatched:
            queries = sum(1 for name in classes if name in unmatched)
            print(f"warning: {queries} of the {sum(1 for name in classes if name)} queries "
                  f"({counted(len(unmatched), 'class', 'classes')}, first: {unmatched[0]}) have no image of their "
                  "class in the index: they count as misses",
                  file=sys.stderr)
    scores = recall(classes, gallery_classes, found, sorted({1, k_found})) if labelled else None
    stem = os.path.splitext(out)[0]
    try:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["query", "rank", "gallery", "distance", "query_class", "gallery_class", "match"])
            for query, (row_distances, rows) in enumerate(zip(distances, found)):
                for rank, (distance, row) in enumerate(zip(row_distances, rows)):
                    if row < 0:
                        continue
                    both = classes[query] != "" and gallery_classes[row] != ""
                    match = int(classes[query] == gallery_classes[row]) if both else ""
                    writer.writerow([paths[query], rank + 1, gallery_paths[row], f"{distance:.6g}", classes[query],
                                     gallery_classes[row], match])
        if scores is not None:
            with open(f"{stem}.json", "w") as handle:
                json.dump({"queries": sum(1 for name in classes if name), "gallery": index.ntotal,
                           "index": meta["kind"], **scores}, handle, indent=1)
    except OSError as error:
        raise UserError(f"cannot write {error.filename or out}: {error.strerror}; choose another --out") from None
    if html_folder is not None:
        explain = None
        if explained:
            from evaluation.explain import explain_pair

            def explain(query_path, found_path):
                return explain_pair(checkpoint, query_path, found_path, device)
        write_results_page(html_folder, paths, classes, images, distances, found, meta, explain, explained)
    return distances, found, scores


def classes_in_turn(classes):
    """The query numbers in page order: the first query of each class (in folder order), then the
    second of each, and so on, so that the top of a page (and the explained queries) spans the
    classes instead of showing the first folder's images only. Unlabelled queries are one group."""
    counts, turn = {}, []
    for name in classes:
        counts[name] = counts.get(name, 0) + 1
        turn.append(counts[name])
    return sorted(range(len(classes)), key=lambda query: (turn[query], query))


def write_results_page(folder, paths, classes, images, distances, found, meta, explain=None, explained=0):
    """The page of the results, the queries' classes in turn (classes_in_turn); `explain(query path,
    found path)` -> (query overlay, found overlay, similarity) adds the heat maps of the first
    `explained` queries of the page and their nearest image."""
    from evaluation.retrieval_page import Picture, QueryRow, write_page

    def title(path, root):
        return os.path.relpath(path, root)

    rows = []
    for shown, query in enumerate(classes_in_turn(classes)):
        path = paths[query]
        results = []
        for rank, (distance, row) in enumerate(zip(distances[query], found[query])):
            if row < 0:
                continue
            gallery_class = meta["classes"][row]
            match = classes[query] == gallery_class if classes[query] and gallery_class else None
            results.append(Picture(meta["paths"][row], f"{rank + 1}", gallery_class or None, float(distance), match,
                                   title(meta["paths"][row], meta["images"])))
        extras = []
        if explain is not None and shown < explained and results:
            query_map, found_map, similarity = explain(path, results[0].source)
            extras = [Picture(query_map, "where the query looks like 1", title=f"similarity {similarity:.4f}"),
                      Picture(found_map, "where 1 looks like the query", title=f"similarity {similarity:.4f}")]
        rows.append(QueryRow(Picture(path, "query", classes[query] or None, title=title(path, images)), results,
                             extras))
    network = f"{os.path.basename(meta['checkpoint'])} ({meta['arch']}, {meta['embed_dim']}-d)"
    try:
        return write_page(folder, rows, title=f"Retrieval: {len(paths)} queries, {meta['count']} indexed images",
                          note=f"network {network}, {meta['kind']} index; the queries' classes in turn (the first "
                               "query of each class, then the second, ...)")
    except OSError as error:
        raise UserError(f"cannot write {error.filename or folder}: {error.strerror}; choose another --html") from None


def run(opt):
    device = device_of(opt.gpu)
    if opt.command == "build":
        checkpoint = networks.load(opt.checkpoint, opt.arch, opt.embed_dim)
        meta = build(checkpoint, opt.checkpoint, opt.images, opt.out, opt.index, opt.nlist, opt.hnsw_m,
                     opt.train_size, device, opt.bs, opt.kernels)
        print(f"{meta['count']} images ({meta['embed_dim']}-d, {meta['kind']} index) written to {opt.out}")
        return meta
    if opt.k < 1:
        raise UserError(f"--k must be at least 1, got {opt.k}")
    index, meta = open_index(opt.index)
    checkpoint_path = opt.checkpoint or meta["checkpoint"]
    checkpoint = networks.load(checkpoint_path, opt.arch, opt.embed_dim)
    check_network(meta, checkpoint, checkpoint_path, opt.index, given=opt.checkpoint is not None)
    if opt.explain and not opt.html:
        raise UserError("--explain draws its heat maps on the page: add --html FOLDER")
    if opt.explain < 0:
        raise UserError(f"--explain must be 0 or more, got {opt.explain}")
    distances, found, scores = search(index, meta, checkpoint, opt.images, opt.k, opt.out, opt.html, opt.nprobe,
                                      opt.ef_search, device, opt.bs, opt.kernels, opt.explain)
    if scores is not None:
        print(", ".join(f"{name} {value:.4f}" for name, value in scores.items()))
    print(f"{len(found)} queries: their {found.shape[1]} nearest written to {opt.out}"
          + (f", recall to {os.path.splitext(opt.out)[0]}.json" if scores is not None else "")
          + (f", page {os.path.join(opt.html, 'index.html')}" if opt.html else ""))
    return distances, found, scores


class _Formatter(argparse.RawDescriptionHelpFormatter, DefaultsFormatter):
    pass


def build_parser():
    parser = CommandParser(command="python -m evaluation.index", description=__doc__.split("\n\n")[0],
                           formatter_class=_Formatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{build,search}")
    builder = commands.add_parser("build", command="python -m evaluation.index build", help="index a folder",
                                  description="Embed every image under --images into a new index folder --out.")
    add_network_flags(builder)
    builder.add_argument("--images", required=True, help="folder of images, searched recursively")
    builder.add_argument("--out", required=True, help="the index folder to write")
    builder.add_argument("--index", default="flat", choices=KINDS, help="exact (flat) or approximate (ivf, hnsw)")
    builder.add_argument("--nlist", type=int, default=100, help="ivf: number of lists (clusters)")
    builder.add_argument("--train_size", type=int, default=10000, help="ivf: images of the training sample")
    builder.add_argument("--hnsw_m", type=int, default=32, help="hnsw: links per node")
    searcher = commands.add_parser("search", command="python -m evaluation.index search", help="search an index",
                                   description="The k nearest indexed images of every image under --images.")
    add_network_flags(searcher)
    for action in searcher._actions:
        if action.dest == "checkpoint":
            action.required, action.help = False, "default: the index's; must hold the same weights"
    searcher.add_argument("--index", required=True, help="an index folder written by build")
    searcher.add_argument("--images", required=True, help="folder of query images, searched recursively")
    searcher.add_argument("--k", type=int, default=10, help="nearest images per query")
    searcher.add_argument("--out", default="results.csv", help="the CSV; recall goes to <out without .csv>.json")
    searcher.add_argument("--html", default=None, help="folder of a static page of the results (index.html)")
    searcher.add_argument("--explain", type=int, default=0, metavar="N",
                          help="with --html: heat maps of where the first N queries and their nearest image "
                               "look alike (evaluation.explain)")
    searcher.add_argument("--nprobe", type=int, default=16, help="ivf: lists searched")
    searcher.add_argument("--ef_search", type=int, default=64, help="hnsw: search breadth (at least --k)")
    # `--help` of the command shows both sub-commands' flags
    parser.epilog = "\n".join(f"{name}:\n{sub.format_help()}" for name, sub in (("build", builder),
                                                                                 ("search", searcher)))
    return parser


def main(argv=None):
    return run_command(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
