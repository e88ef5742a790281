"""Generation: the DCGAN of post 001, trained with kangae's trainer, judged by a classifier."""

from .frechet import GaussianStats, frechet_distance, frechet_from_stats, gaussian_stats
from .judge import Judge, Judgement, judge, judge_classifier
from .models import ARCHS, GAN, Discriminator, GANConfig, Generator, make_layer
from .run import GANRun, interpolation, load_gan, sample, slerp, train_gan, write_interpolation
from .trainer import GANTrainer, JudgeEpochs, SampleFrames

__all__ = [
    "ARCHS", "GAN", "Discriminator", "GANConfig", "GANRun", "GANTrainer", "GaussianStats", "Generator",
    "Judge", "JudgeEpochs", "Judgement", "SampleFrames", "frechet_distance", "frechet_from_stats",
    "gaussian_stats", "interpolation", "judge", "judge_classifier", "load_gan", "make_layer", "sample",
    "slerp", "train_gan", "write_interpolation",
]
