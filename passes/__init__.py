"""sparsec's passes, one a file. `ALL_PASSES` is what pipelines can name."""

from xdsl.passes import ModulePass

from sparsec.passes.fold_batch_norm import FoldBatchNormPass
from sparsec.passes.fold_scale import FoldScalePass
from sparsec.passes.fuse_attention import FuseAttentionPass
from sparsec.passes.fuse_gelu import FuseGeluPass
from sparsec.passes.fuse_layer_norm import FuseLayerNormPass
from sparsec.passes.fuse_rms_norm import FuseRMSNormPass
from sparsec.passes.fuse_rotary import FuseRotaryPass
from sparsec.passes.fuse_swish import FuseSwishPass
from sparsec.passes.lower_kernels import LowerKernelsPass
from sparsec.passes.pack_bitmask import PackBitmaskPass
from sparsec.passes.prune_magnitude import PruneMagnitudePass
from sparsec.passes.prune_sparsegpt import PruneSparseGPTPass
from sparsec.passes.prune_threshold import PruneThresholdPass
from sparsec.passes.prune_wanda import PruneWandaPass
from sparsec.passes.sparsity_report import SparsityReportPass
from sparsec.passes.strip_identity import StripIdentityPass
from sparsec.passes.unpack import UnpackPass

ALL_PASSES: tuple[type[ModulePass], ...] = (
    FoldBatchNormPass,
    FoldScalePass,
    FuseAttentionPass,
    FuseGeluPass,
    FuseLayerNormPass,
    FuseRMSNormPass,
    FuseRotaryPass,
    FuseSwishPass,
    LowerKernelsPass,
    PackBitmaskPass,
    PruneMagnitudePass,
    PruneSparseGPTPass,
    PruneThresholdPass,
    PruneWandaPass,
    SparsityReportPass,
    StripIdentityPass,
    UnpackPass,
)

__all__ = ["ALL_PASSES"]
