"""Training the shipped models (``python -m eigenedit.training``); the recipe is in ``recipe``."""

from eigenedit.training.recipe import (
    DATASETS,
    TrainConfig,
    default_unet_config,
    export_pipeline,
    faces_unet_config,
    main,
    train,
)

__all__ = ["DATASETS", "TrainConfig", "default_unet_config", "export_pipeline", "faces_unet_config", "main", "train"]
