"""A ResNet whose classifier is replaced by a linear map into the embedding space."""
import torch
import torch.nn.functional as F
from torch import nn

HEAD_PREFIX = "model.last_linear."


class EmbeddingNetwork(nn.Module):
    def __init__(self, resnet: nn.Module, arch: str, embed_dim: int,
                 frozen: bool, normalize: bool, double_pool: bool):
        super().__init__()
        self.arch = arch
        self.embed_dim = embed_dim
        self.frozen = frozen
        self.normalize = normalize
        self.double_pool = double_pool
        feature_dim = resnet.fc.in_features
        # Named as in pretrainedmodels so the paper's published checkpoints load by key.
        del resnet.fc
        resnet.last_linear = nn.Linear(feature_dim, embed_dim)
        self.model = resnet
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            # Eval-mode BatchNorm uses and keeps the ImageNet statistics, which the small
            # class-balanced DML batches would otherwise overwrite; its affine weights still train.
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        resnet = self.model
        x = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(images))))
        for layer in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4):
            x = layer(x)
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.feature_map(images)
        pooled = F.adaptive_avg_pool2d(features, 1)
        if self.double_pool:
            pooled = pooled + F.adaptive_max_pool2d(features, 1)
        embeddings = self.model.last_linear(pooled.flatten(1))
        if self.normalize:
            embeddings = F.normalize(embeddings, dim=-1)
        return embeddings

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.model.last_linear.parameters())

    def backbone_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith(HEAD_PREFIX)]
