import numpy as np
import torch
from tqdm import tqdm


@torch.no_grad()
def embed(model, loader, device, description="embedding"):
    """Embeddings (N x D float32) and labels of a non-shuffled loader, in dataset order."""
    model.eval()
    features = np.empty((len(loader.dataset), model.embed_dim), dtype=np.float32)
    start = 0
    for images, _ in tqdm(loader, desc=description, leave=False, disable=None):
        batch = model(images.to(device, non_blocking=True)).float().cpu().numpy()
        features[start:start + len(batch)] = batch
        start += len(batch)
    return features, np.asarray(loader.dataset.labels)
