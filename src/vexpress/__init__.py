"""vexpress: portrait video generation from one reference image + speech (V-Express, re-implemented and extended).

Importing the package stays cheap: heavy dependencies (diffusers, lightning, mediapipe, av, wandb, transformers)
are imported inside the modules that need them.
"""

__version__ = "0.1.0"
