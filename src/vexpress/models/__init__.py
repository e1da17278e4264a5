"""The V-Express network (pure torch.nn): ReferenceNet, denoising UNet with motion modules, V-Kps guider, audio
projection, and the official checkpoint layout. Importing this package imports diffusers."""

from vexpress.models.conditioning import DropMask, ReferenceBank
from vexpress.models.config import VExpressConfig
from vexpress.models.vexpress_net import PARAMETER_GROUPS, VExpressNet, parameter_group

__all__ = ["DropMask", "ReferenceBank", "VExpressConfig", "VExpressNet", "PARAMETER_GROUPS", "parameter_group"]
