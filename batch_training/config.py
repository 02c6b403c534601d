"""What one ``meme-train`` run depends on: :class:`TrainConfig`, built once from flags (with
environment fallbacks shown in ``--help``) or directly by tests and the demo, and validated
when built. No Spark import here, so ``--help`` and flag errors stay fast.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

from memestream.cli import add_common_flags, env_flag, positive_int
from memestream.errors import ConfigError
from memestream.features import DEFAULT_FEATURE_SET, FEATURE_SETS
from memestream.neighbours import DEFAULT_NEIGHBOURS
from memestream.stacking import DEFAULT_TEXT_MODE, TEXT_MODES

MODEL_NAMES = ("logreg", "random_forest", "mlp")
#: The card's pair; the MLP is selectable (it adds ~45 s to a run and was never the most accurate on embeddings)
DEFAULT_MODELS = "logreg,random_forest"
#: What the saved logreg/stacked models are fitted on at the end: every labelled row, or the training part only.
FINAL_FITS = ("all", "train")
#: The saved model that adds the OCR text branch to ``logreg``'s image branch.
STACKED = "stacked"
#: ``--titles`` values that name no file.
TITLE_OPTIONS = ("auto", "none")
#: PCA components and L2 strengths the image branch's grouped CV tries by default.
DEFAULT_PCA_KS = (256, 512)
DEFAULT_REG_PARAMS = (0.03, 0.1, 0.3)
#: Candidate cascade thresholds on the image branch's top probability. Training OCRs only the
#: images below the largest (the only ones whose text any candidate reads): on doom-crossing
#: 0.95 means ~45% of the training part instead of all of it. Over six split seeds, CV and
#: test accuracy at the chosen threshold matched the old grid (1.01 ... 0.8 with every image
#: OCR'd; thresholds above 0.95 never beat 0.95 by more than the tolerance); a ceiling of 0.9
#: lost ~0.007 of CV accuracy (a text model trained on fewer texts). With post titles as
#: extra text documents that loss is gone, so training then OCRs only below the largest
#: threshold the OCR budget affords (``selection.select``).
DEFAULT_CASCADES = (0.95, 0.9, 0.8)
#: The threshold that means "always OCR" (every top probability is below it).
ALWAYS_OCR = 1.01
#: Largest share of images the default cascade may OCR. OCR costs ~0.3 s an image on one
#: thread against ~10 ms for the embedding, so on 2 cores a third is ~20 images/s, the default
#: stream's throughput target (measured: 22.4 images/s with cascade < 0.8, whose CV share is
#: 27-32 % over five split seeds with the neighbour vote); the next threshold (0.9, ~45 %)
#: buys ~0.002 CV accuracy and costs a third of the speed.
DEFAULT_OCR_BUDGET = 0.33


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in str(text).split(",") if v.strip())


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in str(text).split(",") if v.strip())


def absolute(path: str) -> str:
    """A local path made absolute against the working directory now (``~`` expanded), so no
    later change of directory moves it; a URI (``hdfs://...``, ``file:...``) as it is."""
    if "://" in path or path.startswith("file:"):
        return path
    return os.path.abspath(os.path.expanduser(path))


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run depends on (built from flags / env in :func:`main`)."""

    data: str
    model_dir: str
    feature_set: str = DEFAULT_FEATURE_SET
    #: PCA components: a fixed k, or None to choose from ``pca_ks`` by grouped CV.
    pca_k: int | None = None
    pca_ks: tuple[int, ...] = DEFAULT_PCA_KS
    reg_params: tuple[float, ...] = DEFAULT_REG_PARAMS
    text: str = DEFAULT_TEXT_MODE
    #: cascade thresholds tried in CV (``--text cascade``); only images whose out-of-fold
    #: image confidence is below the largest are OCR'd for training.
    cascades: tuple[float, ...] = DEFAULT_CASCADES
    #: largest CV share of images the chosen cascade may OCR (the stream's cost)
    ocr_budget: float = DEFAULT_OCR_BUDGET
    #: neighbours in the stacked model's neighbour vote (memestream.neighbours); 0 = none
    neighbours: int = DEFAULT_NEIGHBOURS
    #: post titles as extra text-branch training documents: "auto" (DATA/posts.csv when it
    #: exists), "none", or a CSV path with ``file`` (relative to DATA) and ``title`` columns
    titles: str = "auto"
    folds: int = 5
    dup_distance: int = 6
    seed: int = 42
    test_fraction: float = 0.2
    models: tuple[str, ...] = ("logreg", "random_forest")
    #: "all": after the test split is scored, refit the shipped logreg/stacked model on every
    #: labelled row with the chosen settings; "train": keep the training-part fit
    final_fit: str = "all"
    num_trees: int = 150
    max_depth: int = 12
    mlp_hidden: int = 64
    cache: bool = True
    #: meme-stream's --output whose ``labels`` table (people's labels) joins the folder
    labels: str | None = None
    #: images a label the folder lacks needs before it becomes a class
    min_class_images: int = 10
    #: "if-better": the new version becomes CURRENT only when not worse than the current one
    #: (batch_training.champion); "always": it always does
    promote: str = "if-better"
    master: str | None = None
    progress: bool = True
    plots: bool = True

    def __post_init__(self) -> None:
        # paths resolve once, here: later steps (and a Spark worker's working directory) never move them
        object.__setattr__(self, "data", absolute(self.data))
        object.__setattr__(self, "model_dir", absolute(self.model_dir))
        if self.titles not in TITLE_OPTIONS:
            object.__setattr__(self, "titles", absolute(self.titles))
        if self.labels is not None:
            if "://" in self.labels and not self.labels.startswith("file:"):
                raise ConfigError(f"--labels reads a local --output folder, found {self.labels}")
            object.__setattr__(self, "labels", absolute(self.labels.removeprefix("file:")))
        if self.promote not in ("if-better", "always"):
            raise ConfigError(f"--promote must be if-better or always, found {self.promote!r}")
        if self.min_class_images < 1:
            raise ConfigError(f"--min-class-images must be at least 1, found {self.min_class_images}")
        if self.feature_set not in FEATURE_SETS:
            raise ConfigError(f"--feature-set must be one of {sorted(FEATURE_SETS)}, found {self.feature_set!r}")
        unknown = [m for m in self.models if m not in MODEL_NAMES]
        if unknown or not self.models:
            raise ConfigError(f"--models must list some of {','.join(MODEL_NAMES)}, found {','.join(self.models) or 'nothing'}")
        if not (0 < self.test_fraction < 1):
            raise ConfigError(f"--test-fraction must be in (0, 1), found {self.test_fraction}")
        if self.text not in TEXT_MODES:
            raise ConfigError(f"--text must be one of {'|'.join(TEXT_MODES)}, found {self.text!r}")
        if self.text != "off" and "logreg" not in self.models:
            raise ConfigError("--text cascade|always stacks on the logreg image branch: add logreg to --models or pass --text off")
        if not self.cascades or any(not (0 < c <= ALWAYS_OCR) for c in self.cascades):
            raise ConfigError(f"--cascades must be thresholds in (0, {ALWAYS_OCR}], found {self.cascades}")
        if not (0 < self.ocr_budget <= 1):
            raise ConfigError(f"--ocr-budget must be a share in (0, 1], found {self.ocr_budget}")
        if self.final_fit not in FINAL_FITS:
            raise ConfigError(f"--final-fit must be one of {'|'.join(FINAL_FITS)}, found {self.final_fit!r}")
        if self.neighbours < 0:
            raise ConfigError(f"--neighbours must be 0 (off) or more, found {self.neighbours}")
        if self.folds < 2:
            raise ConfigError(f"--folds must be at least 2, found {self.folds}")
        if not self.reg_params or any(r <= 0 for r in self.reg_params):
            raise ConfigError(f"--reg-params must be positive numbers, found {self.reg_params}")
        if not (0 <= self.dup_distance <= 32):
            raise ConfigError(f"--dup-distance must be 0..32 bits, found {self.dup_distance}")

    @property
    def ks(self) -> tuple[int, ...]:
        return (self.pca_k,) if self.pca_k else self.pca_ks


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meme-train",
        description="Train meme image classifiers on a labelled folder (one sub-folder per class) with Spark and "
        "save them as a new version of a model directory. Hyper-parameters are chosen by grouped k-fold "
        "cross-validation (near-duplicate images never straddle a split).",
        epilog="examples:\n  meme-sample --out data/sample && meme-train --data data/sample --model-dir models\n"
        "  meme-train --data /data/memes --model-dir models --text off --models logreg\n"
        "  meme-train --data /data/memes --model-dir models --feature-set colorcooc --pca-k 50",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    env_flag(parser, "--data", envvar="MEMESTREAM_TRAIN_DATA", required=True, help="labelled folder: DATA/<class>/.../<image>")
    env_flag(parser, "--model-dir", envvar="MEMESTREAM_MODEL_DIR", required=True, help="model store root (a new version is added)")
    env_flag(parser, "--feature-set", envvar="MEMESTREAM_FEATURE_SET", default=DEFAULT_FEATURE_SET, choices=sorted(FEATURE_SETS), help="image features")
    env_flag(parser, "--text", envvar="MEMESTREAM_TEXT", default=DEFAULT_TEXT_MODE, choices=TEXT_MODES,
             help="OCR text branch stacked on the logreg image branch: off, cascade (OCR only when the image branch is unsure) or always")
    env_flag(parser, "--cascades", envvar="MEMESTREAM_CASCADES", default=",".join(f"{c:g}" for c in DEFAULT_CASCADES),
             help="cascade thresholds (image branch top probability) to try in CV; training OCRs only the images whose "
             "out-of-fold confidence is below the largest (higher: more OCR, a slower first run)")
    env_flag(parser, "--ocr-budget", envvar="MEMESTREAM_OCR_BUDGET", type=float, default=DEFAULT_OCR_BUDGET,
             help="largest share of images the chosen cascade may OCR in CV (the stream's speed: ~0.3 CPU-s per OCR'd image); "
             "the most accurate threshold within it wins")
    env_flag(parser, "--neighbours", envvar="MEMESTREAM_NEIGHBOURS", type=int, default=DEFAULT_NEIGHBOURS,
             help="nearest training memes whose labels vote in the stacked model, blended with the image branch (0: off)")
    env_flag(parser, "--titles", envvar="MEMESTREAM_TITLES", default="auto",
             help="post titles as extra training text for the text branch: a CSV with 'file' (relative to --data) and 'title' "
             "columns, 'none', or 'auto' (DATA/posts.csv when it exists). Training only: predictions read the image alone")
    env_flag(parser, "--pca-k", envvar="MEMESTREAM_PCA_K", type=positive_int, default=None, help="fixed PCA components (default: chosen by CV from --pca-ks)")
    env_flag(parser, "--pca-ks", envvar="MEMESTREAM_PCA_KS", default=",".join(map(str, DEFAULT_PCA_KS)), help="PCA components to try in CV (clamped to the feature dim)")
    env_flag(parser, "--reg-params", envvar="MEMESTREAM_REG_PARAMS", default=",".join(f"{r:g}" for r in DEFAULT_REG_PARAMS), help="logistic regression L2 strengths to try in CV")
    env_flag(parser, "--folds", envvar="MEMESTREAM_FOLDS", type=positive_int, default=5, help="grouped cross-validation folds")
    env_flag(parser, "--dup-distance", envvar="MEMESTREAM_DUP_DISTANCE", type=int, default=6,
             help="dHash bits (of 64) up to which two images count as near-duplicates and stay on one side of every split")
    env_flag(parser, "--seed", envvar="MEMESTREAM_SEED", type=int, default=42, help="seed for the split, the folds and the models")
    env_flag(parser, "--test-fraction", envvar="MEMESTREAM_TEST_FRACTION", type=float, default=0.2, help="share of each class held out for test (whole groups)")
    env_flag(parser, "--models", envvar="MEMESTREAM_MODELS", default=DEFAULT_MODELS, help=f"comma-separated, from {','.join(MODEL_NAMES)}")
    env_flag(parser, "--final-fit", envvar="MEMESTREAM_FINAL_FIT", default="all", choices=FINAL_FITS,
             help="all: once the test split is scored, refit the saved logreg/stacked model on every labelled image with the "
             "chosen settings (more to learn from; the report's test figures are of the training-part fit); train: keep that fit")
    env_flag(parser, "--num-trees", envvar="MEMESTREAM_NUM_TREES", type=positive_int, default=150, help="random forest trees")
    env_flag(parser, "--labels", envvar="MEMESTREAM_TRAIN_LABELS", default=None,
             help="meme-stream's --output folder: the labels people gave stream images (meme-label, the dashboard's "
             "review queue) join --data: new images added, differing folder labels overridden (by sha256)")
    env_flag(parser, "--min-class-images", envvar="MEMESTREAM_MIN_CLASS_IMAGES", type=positive_int, default=10,
             help="images a label that --data lacks needs before --labels makes it a class")
    env_flag(parser, "--promote", envvar="MEMESTREAM_PROMOTE", default="if-better", choices=("if-better", "always"),
             help="if-better: the new version becomes CURRENT only when its grouped-CV accuracy on the same folds is not "
             "worse than the current version's beyond noise (the report says why); always: it always does")
    env_flag(parser, "--master", envvar="SPARK_MASTER", default=None, help="Spark master (default local[*])")
    parser.add_argument("--no-cache", action="store_true", help="recompute embeddings and OCR text (default: reuse MODEL_DIR/_cache)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots in the report")
    add_common_flags(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    try:
        ks, regs, cascades = _ints(args.pca_ks), _floats(args.reg_params), _floats(args.cascades)
    except ValueError:
        raise ConfigError(
            f"--pca-ks, --reg-params and --cascades take comma-separated numbers, found {args.pca_ks!r}, {args.reg_params!r} and {args.cascades!r}"
        ) from None
    return TrainConfig(
        data=args.data,
        model_dir=args.model_dir,
        feature_set=args.feature_set,
        pca_k=int(args.pca_k) if args.pca_k else None,
        pca_ks=ks,
        reg_params=regs,
        text=args.text,
        cascades=cascades,
        ocr_budget=float(args.ocr_budget),
        neighbours=int(args.neighbours),
        titles=str(args.titles),
        folds=int(args.folds),
        dup_distance=int(args.dup_distance),
        seed=int(args.seed),
        test_fraction=float(args.test_fraction),
        models=tuple(m.strip() for m in str(args.models).split(",") if m.strip()),
        num_trees=int(args.num_trees),
        final_fit=str(args.final_fit),
        master=args.master,
        labels=args.labels,
        min_class_images=int(args.min_class_images),
        promote=str(args.promote),
        cache=not args.no_cache,
        progress=not args.quiet and sys.stderr.isatty(),
        plots=not args.no_plots,
    )
