"""What the five commands share: argument types, the real-data and extractor flags, and the
turning of a `UserError` into `error: ...` with exit code 2 (`run`).

Exit codes: 0 done, 2 a user's mistake (argparse uses 2 for a bad flag too), 3 training
stopped on non-finite values, 130 Ctrl-C, 143 SIGTERM (the shell's 128 + signal number).
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
from collections.abc import Callable, Sequence

from training.errors import OutputPathError, UserError
from training.presets import parse_boolean
from training.protocol import DEFAULT_BATCH_SIZE, INCEPTION_2015_NAME

EXIT_USER_ERROR = 2
EXIT_NON_FINITE = 3
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


def run(command: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser,
        argv: Sequence[str] | None = None) -> int:
    """Parses `argv` with `parser` and runs `command`; returns the exit code.

    A `UserError` prints `error: <message>` on stderr and gives 2; Ctrl-C outside a command's
    own handling gives 130. Anything else propagates with its traceback: it is a bug.
    """
    args = parser.parse_args(argv)
    try:
        return command(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as stop:
        if not hasattr(stop, "signum"):  # a `Stopped` has said what it saved
            print("\ninterrupted", file=sys.stderr)
        return EXIT_SIGNAL[getattr(stop, "signum", signal.SIGINT)]
    except BrokenPipeError:  # the reader went away (`| head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def start_tensorflow() -> None:
    """Imports TensorFlow, once, before a command's first use of it: quietly unless
    TF_CPP_MIN_LOG_LEVEL is set (0 shows everything).

    Commands call it after their cheap checks, so that a mistyped flag or path is answered at
    once rather than after TensorFlow's start (about 5 s, 10 s on a busy machine).
    """
    if "tensorflow" in sys.modules:
        return
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        import tensorflow  # noqa: F401
        return
    _start_tensorflow_quietly()


def _start_tensorflow_quietly() -> None:
    """Imports TensorFlow and lets it probe its devices with the process's stderr closed,
    and sets TF_CPP_MIN_LOG_LEVEL=3 for what it logs later.

    TensorFlow's C++ start-up lines (CUDA probing on machines without a GPU, graph-optimizer
    notes) say nothing to a user. TensorFlow 2.21 writes "Could not find cuda drivers"
    through absl before it reads TF_CPP_MIN_LOG_LEVEL
    (https://github.com/tensorflow/tensorflow/issues/100442), so closing the descriptor is
    the only way to keep those lines off a user's console. An import error still reaches
    stderr: it is raised after the descriptor is back.
    """
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    """An argument parser that shows each flag's default in `--help`, and `description` (a
    command module's docstring, in Markdown) as plain text."""
    return argparse.ArgumentParser(prog=f"python -m {prog}",
                                   description=description and plain_text(description),
                                   formatter_class=_HelpFormatter)


def plain_text(markdown: str) -> str:
    """Markdown as a terminal should show it: code blocks indented instead of fenced, inline
    code without its backticks.

    Example:

    ```python
    assert plain_text("Run `train`:\n```\npython -m training.train\n```") == (
        "Run train:\n    python -m training.train")
    ```
    """
    lines, in_code = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        else:
            lines.append(f"    {line}" if in_code else line.replace("`", ""))
    return "\n".join(lines)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks and adds `(default: ...)` to the help of each
    flag that has a default value and does not already name its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.default in (None, False, argparse.SUPPRESS) or "default" in text
                or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)"


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (a count or an interval)."""
    return _whole_number(text, minimum=1)


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number >= 0 (a step, or a count that may be none)."""
    return _whole_number(text, minimum=0)


def sample_count(text: str) -> int:
    """An argparse type: a whole number >= 2, for the images of a covariance (FID) or of
    a pairwise statistic (KID, diversity)."""
    return _whole_number(text, minimum=2)


# NumPy's global seed takes 0 to 2**32 - 1; a signed 32-bit int (TensorFlow's and the Keras
# backends' int32 seeds) holds 0 to 2**31 - 1.
MAX_SEED = 2**31 - 1


def random_seed(text: str) -> int:
    """An argparse type: a random seed, 0 to 2**31 - 1 (what NumPy, TensorFlow and every
    Keras backend take)."""
    return _whole_number(text, minimum=0, maximum=MAX_SEED)


def _whole_number(text: str, minimum: int, maximum: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum or (maximum is not None and value > maximum):
        expected = (f"a whole number >= {minimum}" if maximum is None
                    else f"a whole number from {minimum} to {maximum}")
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0 (a scale)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def boolean(text: str) -> bool:
    """An argparse type: true/false, yes/no or 1/0."""
    try:
        return parse_boolean(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


class BooleanFlag(argparse.Action):
    """`--name` (true), `--name VALUE` (true/false, yes/no, 1/0) and `--no-name` (false)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs):
        negated = [f"--no-{option[2:]}" for option in option_strings if option.startswith("--")]
        kwargs.pop("type", None)
        super().__init__([*option_strings, *negated], dest, nargs="?", metavar="BOOL", **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string.startswith("--no-"):
            if values is not None:
                parser.error(f"{option_string} takes no value")
            setattr(namespace, self.dest, False)
            return
        try:
            setattr(namespace, self.dest, True if values is None else boolean(values))
        except argparse.ArgumentTypeError as error:
            parser.error(f"argument {option_string}: {error}")


def check_output_file(path: str, flag: str, suffix: str) -> None:
    """Checks, before any work, that `path` ends in `suffix` and its folder is writable.

    Raises:
        OutputPathError: it does not, with the fix.
    """
    if not path.lower().endswith(suffix):
        raise OutputPathError(f"{flag} {path}: the file is written as {suffix[1:].upper()}; "
                              f"give a name ending in {suffix}.")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputPathError(f"{flag} {path}: the folder {folder} does not exist; create it "
                              "first.")
    if not os.access(folder, os.W_OK):
        raise OutputPathError(f"{flag} {path}: the folder {folder} is not writable; give "
                              "another path.")


def add_real_data_arguments(parser: argparse.ArgumentParser,
                            dataset_group: argparse._ActionsContainer | None = None) -> None:
    """`--dataset`, `--data-dir`, `--split`, `--image-size`, `--crop-size`: which real images.

    `--dataset` is required, unless it goes into `dataset_group` (e.g. a required mutually
    exclusive group offering another source of real statistics).
    """
    (dataset_group or parser).add_argument(
        "--dataset", required=dataset_group is None,
        help="data set: cifar10, stl10, celeb_a, imagenet2012, folder or npz")
    parser.add_argument("--data-dir", help="where the data set's files are (TFDS data dir, "
                        "image folder / .tar.gz / .zip, or .npz)")
    parser.add_argument("--split", default="train", help="data set split")
    parser.add_argument("--image-size", type=positive_int,
                        help="resize real images to this size first")
    parser.add_argument("--crop-size", type=positive_int,
                        help="centre-crop real images to this square before resizing "
                        "(default: the largest)")


def add_extractor_arguments(parser: argparse.ArgumentParser) -> None:
    """`--extractor` and `--batch-size`, defaulting to the published FIDs' Inception graph."""
    parser.add_argument(
        "--extractor", default=INCEPTION_2015_NAME,
        help="inception-2015 (comparable with papers; downloaded once, or the file named by "
        "KERAS_BSSN_INCEPTION_GRAPH), keras-inceptionv3, a .keras feature model, or a .pb/.tgz "
        "copy of the Inception graph")
    parser.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE,
                        help="images per forward pass")
