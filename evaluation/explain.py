"""Where the network looks: for a query image and a retrieved image, heat maps of the regions that
make the two similar, in the spirit of Grad-CAM for embedding networks (Stylianou et al.,
"Visualizing Deep Similarity Networks", WACV 2019).

    python -m evaluation.explain --checkpoint PATH --query IMG --retrieved IMG [IMG ...] [--out FOLDER]

writes, for each retrieved image, a PNG with the query's and the retrieved image's heat maps side
by side (titled with their similarity), and prints its path. The images are shown as the network
sees them: resized and centre-cropped by the evaluation preprocessing of the checkpoint's run.

With s = <e_q, e_r> the similarity of the two embeddings and A_q the query's last feature map
(C x H x W), the query's map is

    M_q[i, j] = ReLU( sum_c A_q[c, i, j] * ds/dA_q[c, i, j] )

and symmetrically the retrieved image's. For a network that averages its map and projects it
linearly (e = W mean_ij A + b, no normalisation), ds/dA_q[c, i, j] = (W^T e_r)[c] / (H W), so
before the ReLU sum_ij M_q[i, j] = <W mean(A_q), e_r> = s - <b, e_r>: each position's share of the
similarity, Stylianou's decomposition (the bias keeps its own share). For other heads and for
normalised embeddings it is the first-order (gradient times activation) version of it.

A vision transformer's map is taken at the input of its last block, over its patch tokens laid out
on the patch grid: after the last block a class-token pooling sees no patch token, which would
leave the map empty.
"""
import os
from typing import NamedTuple

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image

from datasets.image_dataset import to_rgb
from errors import CommandParser, UserError, run_command
from evaluation import networks
from evaluation.export import add_network_flags, device_of


def contributions(network, query, retrieved):
    """(map_q, map_r, s): the maps sum_c A * ds/dA before ReLU and upsampling, at the feature
    map's resolution (float tensors, h x w), and s = <e_q, e_r>. `query` and `retrieved` are
    preprocessed images (3 x H x W); the network is used in eval mode."""
    images = torch.stack([query, retrieved]).to(next(network.parameters()).device)
    was_training = network.training
    network.eval()
    try:
        with torch.enable_grad():
            features, embeddings = _features_and_embeddings(network, images)
            similarity = (embeddings[0] * embeddings[1]).sum()
            (gradient,) = torch.autograd.grad(similarity, features)
    finally:
        network.train(was_training)
    if features.dim() == 3:  # tokens (B, N, C): the patch tokens on the patch grid
        raw = (features * gradient).sum(dim=2)[:, network.model.num_prefix_tokens:]
        raw = raw.reshape(len(raw), *_patch_grid(network, images, raw.shape[1]))
    else:
        raw = (features * gradient).sum(dim=1)
    return raw[0].detach(), raw[1].detach(), float(similarity.detach())


def _features_and_embeddings(network, images):
    """(A, e) with A a leaf tensor that requires its gradient, e computed from it."""
    blocks = getattr(network.model, "blocks", None) if network.tokens else None
    if blocks is None or len(blocks) == 0:
        features = network.feature_map(images).detach().requires_grad_()
        return features, network.embed_features(features)
    captured = []

    def last_block_input(module, args):
        tokens = args[0].detach().requires_grad_()
        captured.append(tokens)
        return (tokens, *args[1:])

    hook = blocks[-1].register_forward_pre_hook(last_block_input)
    try:
        embeddings = network(images)
    finally:
        hook.remove()
    return captured[0], embeddings


def _patch_grid(network, images, n_patches):
    patch_size = getattr(getattr(network.model, "patch_embed", None), "patch_size", None)
    if patch_size is not None:
        grid = (images.shape[2] // patch_size[0], images.shape[3] // patch_size[1])
        if grid[0] * grid[1] == n_patches:
            return grid
    side = round(n_patches ** 0.5)
    if side * side != n_patches:
        raise ValueError(f"cannot lay {n_patches} patch tokens out on a grid")
    return side, side


def _upsampled(raw, size):
    return F.interpolate(raw.clamp(min=0)[None, None].float(), size=tuple(size), mode="bilinear",
                         align_corners=False)[0, 0]


def heat_map(raw, size):
    """ReLU of a raw map, upsampled bilinearly to size (H, W) and scaled to [0, 1] (numpy)."""
    return heat_maps(raw, raw, size, size)[0]


def heat_maps(map_q, map_r, size_q, size_r):
    """(heat_q, heat_r, peak): both raw maps through a ReLU, upsampled bilinearly to their images'
    sizes and divided by one `peak`, the larger maximum of the two (numpy arrays in [0, 1]). On one
    scale, a query that shares little with the retrieved image shows pale beside one that shares much."""
    heat_q, heat_r = _upsampled(map_q, size_q), _upsampled(map_r, size_r)
    peak = max(float(heat_q.max()), float(heat_r.max()))
    if peak <= 0:
        return np.zeros(tuple(size_q), np.float32), np.zeros(tuple(size_r), np.float32), 0.0
    return (heat_q / peak).cpu().numpy(), (heat_r / peak).cpu().numpy(), peak


def similarity_maps(network, query, retrieved):
    """(map_q, map_r): heat maps (H x W numpy arrays in [0, 1], the size of the network's input) of
    the regions of the preprocessed images `query` and `retrieved` (3 x H x W) that make them
    similar, on one scale (heat_maps)."""
    map_q, map_r, _ = contributions(network, query, retrieved)
    return heat_maps(map_q, map_r, query.shape[-2:], retrieved.shape[-2:])[:2]


COLORMAP = "jet"


def overlay(image, heat, alpha=0.5, colormap=COLORMAP):
    """`image` (PIL) with the heat map (2-d array in [0, 1]) blended over it in a matplotlib
    colormap; the image's size (the map is resized to it when it differs)."""
    image = image.convert("RGB")
    heat = np.asarray(heat, dtype=np.float32)
    if heat.shape != (image.height, image.width):
        heat = np.asarray(Image.fromarray(heat, mode="F").resize(image.size, Image.BILINEAR))
    colours = matplotlib.colormaps[colormap](np.clip(heat, 0, 1))[..., :3] * 255
    blended = (1 - alpha) * np.asarray(image, dtype=np.float32) + alpha * colours
    return Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8))


def network_view(transform, image):
    """The image as the network sees it: the steps of the evaluation transform before ToTensor
    (resize, centre crop), so that it can be shown without un-normalising."""
    for step in transform.transforms:
        if isinstance(step, T.ToTensor):
            break
        image = step(image)
    return image


def read_image(path, flag):
    if not os.path.isfile(path):
        raise UserError(f"no file {path}; give an image file to {flag}")
    try:
        with Image.open(path) as image:
            return to_rgb(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise UserError(f"{path} given to {flag} is not a readable image ({error}); give an image file") from None


class Explanation(NamedTuple):
    """The network's view of the query and of the retrieved image, each with its heat map over it;
    their similarity; the value of the maps' common top colour (a position's share of the similarity);
    and the maps' grid (h, w): the resolution of the last feature map, 1 x 1 at 32 px for a ResNet."""
    query: Image.Image
    retrieved: Image.Image
    similarity: float
    peak: float
    grid: tuple


def explanation(checkpoint, query_image, retrieved_image, device, transform=None) -> Explanation:
    """The Explanation of two RGB PIL images, both maps on one scale."""
    transform = transform or networks.evaluation_transform(checkpoint)
    network = checkpoint.network.to(device)
    query, retrieved = transform(query_image), transform(retrieved_image)
    map_q, map_r, similarity = contributions(network, query, retrieved)
    heat_q, heat_r, peak = heat_maps(map_q, map_r, query.shape[-2:], retrieved.shape[-2:])
    views = network_view(transform, query_image), network_view(transform, retrieved_image)
    return Explanation(overlay(views[0], heat_q), overlay(views[1], heat_r), similarity, peak, tuple(map_q.shape))


def explain_loaded(checkpoint, query_image, retrieved_image, device, transform=None):
    """(query overlay, retrieved overlay, similarity) for two RGB PIL images."""
    return tuple(explanation(checkpoint, query_image, retrieved_image, device, transform)[:3])


def explain_pair(checkpoint, query_path, retrieved_path, device="cpu"):
    """(query overlay, retrieved overlay, similarity) of two image files: PIL images of the network's
    view of each with its heat map over it. `checkpoint`: a networks.Checkpoint or a checkpoint path."""
    if not isinstance(checkpoint, networks.Checkpoint):
        checkpoint = networks.load(checkpoint)
    return explain_loaded(checkpoint, read_image(query_path, "--query"), read_image(retrieved_path, "--retrieved"),
                          torch.device(device))


def draw_pair(result: Explanation, names):
    """The figure of an Explanation: the two overlays side by side, their common colour bar, and in
    the title the similarity and, when the map is coarse, that it cannot say where."""
    figure = Figure(figsize=(8.8, 4.6), layout="constrained")
    panels = figure.subplots(1, 2)
    for axes, image, title in zip(panels, (result.query, result.retrieved), names):
        axes.imshow(image)
        axes.set(xticks=[], yticks=[])
        axes.set_title(title, fontsize=9)
    scale = ScalarMappable(Normalize(0, result.peak if result.peak > 0 else 1), matplotlib.colormaps[COLORMAP])
    figure.colorbar(scale, ax=list(panels), shrink=0.8, label="share of the similarity at a position (one scale)")
    height, width = result.grid
    coarse = f"\nthe feature map is {height} x {width} at this input size: too coarse to say where (larger " \
             "inputs help)" if min(height, width) < 3 else ""
    figure.suptitle(f"similarity {result.similarity:.4f}: where the two images look alike{coarse}", fontsize=10)
    return figure


def pair_figure(result: Explanation, names, path):
    """draw_pair's figure, written to `path` as a PNG; the path."""
    figure = draw_pair(result, names)
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=100)
    return path


def run(opt):
    checkpoint = networks.load(opt.checkpoint, opt.arch, opt.embed_dim)
    query_image = read_image(opt.query, "--query")
    retrieved_images = [read_image(path, "--retrieved") for path in opt.retrieved]
    device = device_of(opt.gpu)
    transform = networks.evaluation_transform(checkpoint)
    try:
        os.makedirs(opt.out, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create {opt.out}: {error.strerror}; choose another --out") from None
    stem = os.path.splitext(os.path.basename(opt.query))[0]
    written = []
    for number, (path, image) in enumerate(zip(opt.retrieved, retrieved_images)):
        result = explanation(checkpoint, query_image, image, device, transform)
        if min(result.grid) < 3 and number == 0:
            print(f"the network's last feature map is {result.grid[0]} x {result.grid[1]} at this input size: the "
                  "maps cannot say where; larger images help")
        name = f"{number:02d}_{stem}_{os.path.splitext(os.path.basename(path))[0]}.png"
        titles = (f"query {os.path.basename(opt.query)}", f"retrieved {os.path.basename(path)}")
        try:
            written.append(pair_figure(result, titles, os.path.join(opt.out, name)))
        except OSError as error:
            raise UserError(f"cannot write {error.filename or opt.out}: {error.strerror}; choose another --out") \
                from None
        print(written[-1])
    return written


def main(argv=None):
    parser = CommandParser(command="python -m evaluation.explain", description=__doc__.split("\n\n")[0])
    add_network_flags(parser)
    parser.add_argument("--query", required=True, help="the query image")
    parser.add_argument("--retrieved", required=True, nargs="+", help="images to compare with the query")
    parser.add_argument("--out", default="explanations", help="folder of the PNGs")
    run_command(run, parser.parse_args(argv))


if __name__ == "__main__":
    main()
