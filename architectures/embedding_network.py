"""A backbone whose ImageNet classifier is replaced by an embedding head."""
import torch
import torch.nn.functional as F
from torch import nn

from architectures.heads import HEADS
from architectures.registry import Backbone


class EmbeddingNetwork(nn.Module):
    """Backbone feature map -> average (+ max with double_pool) pooling -> head -> optional L2 norm.

    The backbone sits under `model.` with the head's projection as `model.last_linear`; the head's
    other layers are `before_projection` and `after_projection`.
    """

    def __init__(self, backbone: Backbone, network: nn.Module, arch: str, embed_dim: int, head: str = "linear",
                 frozen: bool = False, normalize: bool = False, double_pool: bool = False):
        super().__init__()
        self.arch = arch
        self.head = head
        self.embed_dim = embed_dim
        self.frozen = frozen
        self.normalize = normalize
        self.double_pool = double_pool
        self.backbone_trainable = True
        self._features = backbone.features
        feature_dim = getattr(network, backbone.classifier).in_features
        delattr(network, backbone.classifier)
        self.before_projection, self.after_projection = HEADS.get(head)(feature_dim, embed_dim)
        # Named as in pretrainedmodels so the paper's published checkpoints load by key.
        network.last_linear = nn.Linear(feature_dim, embed_dim)
        self.model = network
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen or not self.backbone_trainable:
            # Eval-mode BatchNorm uses and keeps the ImageNet statistics, which the small
            # class-balanced DML batches would otherwise overwrite; its affine weights still train
            # (unless the whole backbone is off).
            for module in self.model.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self

    def set_backbone_trainable(self, trainable: bool) -> None:
        """Off: only the head trains; the backbone gets no gradients and its BatchNorm statistics stay."""
        self.backbone_trainable = trainable
        for parameter in self.backbone_parameters():
            parameter.requires_grad_(trainable)
        self.train(self.training)

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        return self._features(self.model, images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.feature_map(images)
        pooled = F.adaptive_avg_pool2d(features, 1)
        if self.double_pool:
            pooled = pooled + F.adaptive_max_pool2d(features, 1)
        embeddings = self.after_projection(self.model.last_linear(self.before_projection(pooled.flatten(1))))
        if self.normalize:
            embeddings = F.normalize(embeddings, dim=-1)
        return embeddings

    def head_parameters(self) -> list[nn.Parameter]:
        return [*self.before_projection.parameters(), *self.model.last_linear.parameters(),
                *self.after_projection.parameters()]

    def backbone_parameters(self) -> list[nn.Parameter]:
        return [parameter for name, parameter in self.model.named_parameters()
                if not name.startswith("last_linear.")]
