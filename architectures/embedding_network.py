"""A backbone whose ImageNet classifier is replaced by an embedding head."""
import torch
import torch.nn.functional as F
from torch import nn

from architectures.heads import HEADS
from architectures.registry import Backbone

# What feeds the head (--pooling): "auto" is the backbone's own (timm's pooling and head norm for a
# timm model, the average of the map for the others); "avg" averages the feature map (plus its
# maximum with _double); "class_token" and "patch_mean" take a vision transformer's class token or
# the mean of its patch tokens.
POOLINGS = ("auto", "avg", "class_token", "patch_mean")


class EmbeddingNetwork(nn.Module):
    """Backbone features -> pooling -> head -> optional L2 norm.

    The backbone sits under `model.` with the head's projection as `model.last_linear`; the head's
    other layers are `before_projection` and `after_projection`.
    """

    def __init__(self, backbone: Backbone, network: nn.Module, arch: str, embed_dim: int, head: str = "linear",
                 frozen: bool = False, normalize: bool = False, double_pool: bool = False, pooling: str = "auto",
                 image_size: int | None = None, tokens: bool = False):
        super().__init__()
        self.arch = arch
        self.head = head
        self.embed_dim = embed_dim
        self.frozen = frozen
        self.normalize = normalize
        self.double_pool = double_pool
        self.pooling = pooling
        self.image_size = image_size
        self.tokens = tokens  # a vision transformer's features are tokens (B, N, C), not a map
        self.backbone_trainable = True
        self._features = backbone.features
        self.layer_groups = backbone.layer_groups
        if backbone.classifier is None:  # built without a classifier (timm's num_classes=0)
            feature_dim = network.num_features
        else:
            feature_dim = getattr(network, backbone.classifier).in_features
            delattr(network, backbone.classifier)
        self.own_pooling = backbone.classifier is None and pooling == "auto" and not double_pool
        # A timm head that normalises the pooled map (ConvNeXt's LayerNorm) keeps doing so after
        # --pooling avg or _double: its stages' outputs are not normalised otherwise.
        head_norm = getattr(getattr(network, "head", None), "norm", None) if backbone.classifier is None else None
        self.head_norm = head_norm if isinstance(head_norm, nn.Module) and not isinstance(head_norm, nn.Identity) \
            else None
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

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """(B, feature_dim) from the backbone's features."""
        if self.own_pooling:
            return self.model.forward_head(features, pre_logits=True)
        if self.pooling == "class_token":
            return features[:, 0]
        if self.pooling == "patch_mean":
            return features[:, self.model.num_prefix_tokens:].mean(dim=1)
        pooled = F.adaptive_avg_pool2d(features, 1)
        if self.double_pool:
            pooled = pooled + F.adaptive_max_pool2d(features, 1)
        if self.head_norm is not None:
            pooled = self.head_norm(pooled)
        return pooled.flatten(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed_features(self.feature_map(images))

    def embed_features(self, features: torch.Tensor) -> torch.Tensor:
        """The embeddings of the backbone's features (feature_map's output): pooling, head, norm.
        Apart so that gradients can be taken with respect to the features (evaluation.explain)."""
        embeddings = self.after_projection(self.model.last_linear(self.before_projection(self.pool(features))))
        if self.normalize:
            embeddings = F.normalize(embeddings, dim=-1)
        return embeddings

    def head_parameters(self) -> list[nn.Parameter]:
        return [*self.before_projection.parameters(), *self.model.last_linear.parameters(),
                *self.after_projection.parameters()]

    def backbone_parameters(self) -> list[nn.Parameter]:
        return [parameter for _, parameter in self.named_backbone_parameters()]

    def named_backbone_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """(name under the backbone, parameter), the embedding projection left out."""
        return [(name, parameter) for name, parameter in self.model.named_parameters()
                if not name.startswith("last_linear.")]

    def no_weight_decay(self) -> set[str]:
        """Backbone parameters that decoupled weight decay (AdamW) leaves alone: position embeddings
        and class tokens, as timm's models name them; biases and norms go by their shape."""
        own = getattr(self.model, "no_weight_decay", None)
        return set(own()) if callable(own) else set()

    def backbone_layers(self) -> dict[str, int] | None:
        """{backbone parameter name: depth} for layer-wise learning-rate decay (0: the stem, then one
        per block), from the backbone's group matcher; None when it has none."""
        matcher = self.layer_groups
        if matcher is None and callable(getattr(self.model, "group_matcher", None)):
            matcher = self.model.group_matcher(coarse=False)
        if matcher is None:
            return None
        from timm.models import group_parameters

        names = dict(self.named_backbone_parameters())
        depths = group_parameters(self.model, matcher, return_values=False, reverse=True)
        return {name: depth for name, depth in depths.items() if name in names}
