"""Tests for `training.distribute`: strategies, loss scaling, per-replica latents, and `fit` of a
stand-in GAN on 1 and 2 replicas and on a two-worker `MultiWorkerMirroredStrategy` cluster.

tests/conftest.py gives this process two logical CPUs, so `MirroredStrategy` has two replicas.
The multi-worker tests spawn two worker processes (tests/training/multiworker_worker.py) that
talk over localhost.
"""

import contextlib
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tests.training import multiworker_worker as worker
from tests.training.test_gan import _dataset, _fit, _gan
from tests.training.run_files import assert_trained_alike, checkpoint_values
from tests.strategies import two_cpu_strategy
from training import cli
from training.callbacks import RunCheckpoint, generator_step
from training.callbacks.agreed_stop import AgreedStop
from training.signals import SignalHandlers, StopRequest
from training.errors import Stopped, StrategyError
from training.distribute import (
    STRATEGY_NAMES,
    MultiWorkerFitMixin,
    global_batch_loss,
    make_strategy,
    replica_latents,
)

WORKER_SCRIPT = pathlib.Path(worker.__file__)
REPO_ROOT = WORKER_SCRIPT.parents[2]
WORKER_TIMEOUT_S = 120
# Two TensorFlow starts and a compiled step on a busy 2-core machine.
WORKER_START_TIMEOUT_S = 600
# From a signal to both workers' exit, a checkpoint saved.
STOP_TIMEOUT_S = 180


def _two_cpus() -> tf.distribute.Strategy:
    return two_cpu_strategy()


def _per_replica(strategy: tf.distribute.Strategy, fn) -> list[np.ndarray]:
    return [v.numpy() for v in strategy.experimental_local_results(strategy.run(fn))]


# --- make_strategy ------------------------------------------------------------------------


def test_auto_and_default_give_the_default_strategy_on_a_machine_without_gpus():
    assert not tf.config.list_logical_devices("GPU")
    for name in ("auto", "default"):
        strategy = make_strategy(name)
        assert strategy is tf.distribute.get_strategy()
        assert strategy.num_replicas_in_sync == 1


def test_mirrored_uses_the_logical_cpus_or_the_given_devices():
    strategy = make_strategy("mirrored")
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    assert strategy.num_replicas_in_sync == 2  # the two logical CPUs of conftest.py
    assert make_strategy("mirrored", devices=["/cpu:1"]).num_replicas_in_sync == 1
    # One per process and layout: a second one's collectives would meet the first one's.
    assert make_strategy("mirrored") is strategy


def test_one_device_takes_one_device():
    strategy = make_strategy("one_device", devices=["/cpu:1"])
    assert isinstance(strategy, tf.distribute.OneDeviceStrategy)
    assert strategy.extended.worker_devices[0].endswith("CPU:1")
    with pytest.raises(ValueError, match="exactly one device"):
        make_strategy("one_device", devices=["/cpu:0", "/cpu:1"])


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="Unknown strategy 'horovod'") as error:
        make_strategy("horovod")
    assert all(name in str(error.value) for name in STRATEGY_NAMES)


def test_devices_are_rejected_where_they_do_not_apply():
    with pytest.raises(ValueError, match="`devices` applies to"):
        make_strategy("multi_worker", devices=["/cpu:0"])


def test_multi_worker_without_tf_config_says_how_to_set_it(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match=r"TF_CONFIG environment variable, which is not set"
                                         r".*Example: TF_CONFIG='\{\"cluster\""):
        make_strategy("multi_worker")


@pytest.mark.parametrize("tf_config", [
    "worker0:12345",  # not JSON
    "[]",
    '{"cluster": {"worker": ["localhost:1"]}}',  # no task
    '{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "chief", "index": 0}}',
    '{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 1}}',
    '{"cluster": {"worker": "localhost:1"}, "task": {"type": "worker", "index": 0}}',
])
def test_multi_worker_with_malformed_tf_config_shows_it_and_an_example(monkeypatch, tf_config):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match="TF_CONFIG environment variable must be JSON") as error:
        make_strategy("multi_worker")
    assert repr(tf_config) in str(error.value) and "Example:" in str(error.value)


def test_tpu_without_a_tpu_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TPU_NAME", raising=False)
    with pytest.raises(StrategyError, match="No TPU found"):
        make_strategy("tpu")


# --- AgreedStop ---------------------------------------------------------------------------


def test_agreed_stop_stops_on_a_noted_signal_and_sigterm_wins_over_ctrl_c(monkeypatch,
                                                                          capfd):
    request = StopRequest()
    stop = AgreedStop(_two_cpus(), request)
    stop.check()  # nothing noted: training goes on
    with SignalHandlers(request.note):
        os.kill(os.getpid(), signal.SIGINT)  # noted, not raised
    assert "Ctrl-C noted: all workers of the cluster stop after the same step" in (
        capfd.readouterr().err)
    with pytest.raises(Stopped) as stopped:
        stop.check()
    assert stopped.value.signum == signal.SIGINT
    assert capfd.readouterr().err == ""  # this worker's own signal: nothing more to say

    # Another worker noted SIGTERM.
    monkeypatch.setattr(stop, "_noted_by_every_replica",
                        lambda noted: tf.stack([noted, tf.constant(signal.SIGTERM.value)]))
    with pytest.raises(Stopped) as stopped:
        stop.check()
    assert stopped.value.signum == signal.SIGTERM
    assert "SIGTERM reached another worker of the cluster" in capfd.readouterr().err


_SIGNALLED_TWICE = """
import os, signal, sys, time
from training.signals import SignalHandlers, StopRequest

request = StopRequest()
with SignalHandlers(request.note):
    os.kill(os.getpid(), {signum})
    assert request.signum == {signum}, "noted, and the process goes on"
    try:
        os.kill(os.getpid(), {signum})
        time.sleep(30)
    except KeyboardInterrupt:
        sys.exit(130)
"""


@pytest.mark.parametrize("stop_signal, returncode", [(signal.SIGINT, 130),
                                                     (signal.SIGTERM, -signal.SIGTERM)])
def test_a_second_signal_stops_a_worker_alone_at_once(stop_signal, returncode):
    # The way out of a worker whose cluster never formed; SIGINT ignored as a child of a
    # shell without job control inherits it.
    process = subprocess.run(
        [sys.executable, "-c", _SIGNALLED_TWICE.format(signum=int(stop_signal))],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert process.returncode == returncode, process.stderr
    name = "Ctrl-C" if stop_signal == signal.SIGINT else "SIGTERM"
    assert f"{name} noted" in process.stderr
    assert f"{name} again: this worker stops alone, without a checkpoint" in process.stderr


# --- global_batch_loss and replica_latents ---------------------------------------------------


def test_global_batch_loss_summed_over_replicas_is_the_global_mean():
    losses = np.arange(8, dtype="float32")
    strategy = _two_cpus()
    dataset = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices(losses).batch(8))
    per_replica = strategy.run(lambda x: global_batch_loss(x, 8), args=(next(iter(dataset)),))
    total = strategy.reduce("SUM", per_replica, axis=None)
    np.testing.assert_allclose(total.numpy(), losses.mean(), rtol=1e-6)


def test_replica_latents_differ_across_replicas_and_repeat_for_the_same_seed_and_step():
    strategy = _two_cpus()
    first = _per_replica(strategy, lambda: replica_latents(4, 3, seed=(1, 2), step=5))
    again = _per_replica(strategy, lambda: replica_latents(4, 3, seed=(1, 2), step=5))
    next_step = _per_replica(strategy, lambda: replica_latents(4, 3, seed=(1, 2), step=6))

    assert first[0].shape == (4, 3)
    assert not np.allclose(first[0], first[1])
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate(again))
    assert not np.allclose(first[0], next_step[0])


def test_replica_latents_split_the_same_global_batch_as_one_replica_draws():
    split = _per_replica(_two_cpus(), lambda: replica_latents(4, 3, seed=9, step=2))
    whole = replica_latents(8, 3, seed=9, step=2)  # default strategy: one replica
    np.testing.assert_array_equal(np.concatenate(split), whole.numpy())


def test_replica_latents_streams_and_uniform_draws():
    normal = replica_latents(64, 2, seed=(3, 0), step=0).numpy()
    other_stream = replica_latents(64, 2, seed=(3, 1), step=0).numpy()
    uniform = replica_latents(64, 2, seed=(3, 0), step=0, uniform=True).numpy()
    assert not np.allclose(normal, other_stream)
    assert normal.dtype == np.float32 and normal.min() < 0
    assert uniform.min() >= 0 and uniform.max() < 1


# --- fit of the stand-in GAN on 1 and 2 replicas ---------------------------------------------


def test_gan_fit_on_two_replicas_matches_one_device():
    one_device = worker.train(worker.make_gan(), worker.image_dataset())
    with _two_cpus().scope():
        gan = worker.make_gan()
    two_replicas = worker.train(gan, worker.image_dataset())

    for index, initial in enumerate(worker.initial_weights()):
        trained = one_device[f"weight_{index}"]
        assert not np.allclose(trained, initial, atol=1e-3)  # training moved every weight
    for key, value in one_device.items():
        np.testing.assert_allclose(two_replicas[key], value, rtol=1e-5, atol=1e-6, err_msg=key)


def test_optimizers_missing_from_optimizer_variables_are_an_error_with_several_replicas():
    class ForgetfulGAN(MultiWorkerFitMixin, worker.PlainStandInGAN):
        pass  # no `optimizer_variables`: d_optimizer and g_optimizer would build in the step

    with _two_cpus().scope():
        gan = worker.make_gan(ForgetfulGAN)
    with pytest.raises(ValueError, match=r"`ForgetfulGAN.d_optimizer` is not built.*"
                                         r"`ForgetfulGAN.optimizer_variables\(\)`"):
        worker.train(gan, worker.image_dataset())


def test_without_the_mixin_keras_builds_the_gan_by_calling_it_on_images():
    # Under any strategy, Keras's symbolic build calls the model on the first data batch; a
    # GAN's `call` takes latents, so MultiWorkerFitMixin marks the (built) GAN built instead.
    with _two_cpus().scope():
        gan = worker.make_gan(worker.PlainStandInGAN)
    with pytest.raises(ValueError, match="expected axis -1 of input shape to have value 4"):
        worker.train(gan, worker.image_dataset())


# --- the GAN on 2 replicas: its step, and batches that do not split -----------------------


def test_the_gans_step_counts_each_train_step_once_on_two_replicas(tmp_path):
    with _two_cpus().scope():
        gan = _gan()
    _fit(gan, 8, 3)
    assert generator_step(gan) == 3
    RunCheckpoint(gan, tmp_path).save()
    with _two_cpus().scope():
        resumed = _gan()
        assert RunCheckpoint(resumed, tmp_path).restore() == 3
    assert generator_step(resumed) == 3


def test_a_generator_batch_the_replicas_cannot_split_is_refused_by_compile():
    with _two_cpus().scope(), pytest.raises(
            ValueError, match="`generator_batch_size` of 15 does not split evenly over the 2 "
                              "replicas of the strategy; give a multiple of 2"):
        _gan(generator_batch_size=15)


@pytest.mark.parametrize("n_dis, batch", [(1, 9), (2, 18)])
def test_fit_refuses_batches_the_replicas_cannot_split_into_discriminator_batches(n_dis,
                                                                                   batch):
    with _two_cpus().scope():
        gan = _gan(n_dis=n_dis)
    with pytest.raises(ValueError, match=f"A batch of {batch} does not split evenly over the "
                                         f"2 replicas.*give a multiple of {2 * n_dis}"):
        gan.fit(_dataset(batch, 1), steps_per_epoch=1, epochs=1, verbose=0)
    assert generator_step(gan) == 0


_THREE_CPUS_TRAIN = (
    "import sys\n"
    "import tensorflow as tf\n"
    "tf.config.set_logical_device_configuration(tf.config.list_physical_devices('CPU')[0],"
    " [tf.config.LogicalDeviceConfiguration()] * 3)\n"
    "from training import train\n"
    "sys.exit(train.main(sys.argv[1:]))")


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "6", "--generator-batch-size", "32", "--reuse-latents", "false"],
     "--generator-batch-size 32 does not split evenly over 3 replicas. Give a multiple of 3."),
    (["--batch-size", "8"],
     "--batch-size 8 does not split evenly over 3 replicas. Give a multiple of 3."),
])
def test_the_training_command_refuses_batches_three_replicas_cannot_split(tmp_path, flags,
                                                                          message):
    images = tmp_path / "images.npz"
    np.savez(images, x=np.random.default_rng(0).integers(0, 256, (32, 8, 8, 3), np.uint8))
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-c", _THREE_CPUS_TRAIN, "--dataset", "npz", "--data-dir", str(images),
         "--image-size", "8", "--steps", "2", "--fid-every", "0", "--no-export",
         "--strategy", "mirrored", "--out", str(run), *flags],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, CUDA_VISIBLE_DEVICES="-1"))
    assert result.returncode == cli.EXIT_USER_ERROR, result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"error: {message}"
    assert "Traceback" not in result.stderr
    assert not (run / "config.json").exists() and not (run / "checkpoints").exists()


# --- two workers on localhost ----------------------------------------------------------------


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:  # all bound at once, so the ports differ
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@contextlib.contextmanager
def _started_workers(tmp_path: pathlib.Path, *args: str, module: str = worker.__name__):
    """Starts `python -m module` as two workers of one cluster (`{index}` in `args` is theirs,
    and each has its own TMPDIR, `tmp_path/tmp{index}`); yields the processes and their
    (stdout, stderr) files, and kills those still running at the end (one would wait for
    its peer forever)."""
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
    processes, logs = [], []
    try:
        for index in range(2):
            scratch = tmp_path / f"tmp{index}"
            scratch.mkdir(exist_ok=True)
            env = dict(os.environ, CUDA_VISIBLE_DEVICES="-1", TMPDIR=str(scratch),
                       TF_CONFIG=json.dumps(
                           {"cluster": cluster, "task": {"type": "worker", "index": index}}))
            stdout, stderr = (open(tmp_path / f"worker{index}.{name}", "w+")
                              for name in ("out", "err"))
            logs.append((stdout, stderr))
            # `-m` from the repository root, as the training system runs: `training` is not
            # installed (the wheel ships keras_bssn alone), so it is found in the checkout.
            command = [sys.executable, "-m", module,
                       *(a.format(index=index) for a in args)]
            processes.append(subprocess.Popen(command, cwd=REPO_ROOT, env=env,
                                              stdout=stdout, stderr=stderr))
        yield processes, logs
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for files in logs:
            for file in files:
                file.close()


def _outputs(logs: list[tuple]) -> list[tuple[str, str]]:
    """The (stdout, stderr) the workers have written so far."""
    outputs = []
    for stdout, stderr in logs:
        stdout.seek(0), stderr.seek(0)
        outputs.append((stdout.read(), stderr.read()))
    return outputs


def _fail_showing_stderr(problem: str, processes: list[subprocess.Popen],
                         outputs: list[tuple[str, str]]) -> None:
    details = "\n".join(f"--- worker {index} (exit code {process.returncode}) stderr:\n"
                        f"{err[-4000:]}" for index, (process, (_, err))
                        in enumerate(zip(processes, outputs)))
    pytest.fail(f"{problem}\n{details}")


def _run_workers(tmp_path: pathlib.Path, *args: str, module: str = worker.__name__,
                 timeout_s: float = WORKER_TIMEOUT_S, expect_failure: bool = False
                 ) -> list[str]:
    """Runs `python -m module` as two workers of one cluster (see `_started_workers`); returns
    their stdouts, or with `expect_failure` their stderrs once both have exited with exit
    code 2.

    Fails the test, showing the workers' stderr, when one exits with an error (the other is
    then killed: it would wait for its peer) or they run past WORKER_TIMEOUT_S.
    """
    with _started_workers(tmp_path, *args, module=module) as (processes, logs):
        problem = _wait(processes, time.monotonic() + timeout_s,
                        cli.EXIT_USER_ERROR if expect_failure else 0)
        outputs = _outputs(logs)
    if problem:
        _fail_showing_stderr(problem, processes, outputs)
    return [err if expect_failure else out for out, err in outputs]


def _wait(processes: list[subprocess.Popen], deadline: float, expected: int = 0) -> str | None:
    """Waits for all `processes` to exit with `expected`; returns what went wrong, if anything."""
    while True:
        codes = [process.poll() for process in processes]
        if any(code not in (None, expected) for code in codes):
            return f"a worker exited with {codes}, not {expected}"
        if all(code == expected for code in codes):
            return None
        if time.monotonic() > deadline:
            return f"the workers did not finish in time (exit codes {codes}, None: running)"
        time.sleep(0.2)


@pytest.mark.multiworker
def test_fit_on_two_workers_with_the_mixin_matches_one_process(tmp_path):
    # The stand-in GAN, and a classifier fit on (x, y) batches, both with MultiWorkerFitMixin.
    _run_workers(tmp_path, "--output", str(tmp_path / "worker{index}.npz"))
    results = [dict(np.load(tmp_path / f"worker{index}.npz")) for index in range(2)]
    one_process = worker.train_both(tf.distribute.get_strategy())  # the same global batches

    assert results[0].keys() == results[1].keys() == one_process.keys()
    for key, value in results[0].items():
        assert value.shape == one_process[key].shape, key  # scalar logs stay scalars
        np.testing.assert_array_equal(results[1][key], value, err_msg=key)
        # The weights, and the logs: the mixin's reduction is the mean over the workers.
        np.testing.assert_allclose(value, one_process[key], rtol=1e-5, atol=1e-6, err_msg=key)


def _run_files(run_dir: pathlib.Path) -> set[str]:
    """The run folder's files (TensorBoard event files by kind: their names hold host and
    time)."""
    return {str(path.relative_to(run_dir)).split(".tfevents")[0]
            for path in run_dir.rglob("*") if path.is_file()}


def _small_run_flags(tmp_path: pathlib.Path) -> list[str]:
    """Training command flags for a tiny run on 32 random 8x8 images written to `tmp_path`."""
    images = tmp_path / "images.npz"
    rng = np.random.default_rng(0)
    np.savez(images, x=rng.integers(0, 256, (32, 8, 8, 3), dtype=np.uint8))
    return ["--dataset", "npz", "--data-dir", str(images), "--image-size", "8",
            "--batch-size", "8", "--fid-every", "0", "--no-export"]


@pytest.mark.multiworker
def test_the_training_command_on_two_workers_writes_one_run_folder_and_resumes(tmp_path):
    from training import train

    flags = [*_small_run_flags(tmp_path), "--log-every", "2", "--sample-every", "2",
             "--checkpoint-every", "2"]
    run = tmp_path / "run"

    def workers(steps: int, *outs: str, expect_failure: bool = False) -> list[str]:
        return _run_workers(
            tmp_path, str(tmp_path / "weights{index}.npz"), *flags, "--steps", str(steps),
            "--strategy", "multi_worker", "--out", *(outs or [str(run)]),
            module="tests.training.train_recording_weights", timeout_s=600,
            expect_failure=expect_failure)

    workers(4)
    workers(6)  # both resume from the chief's step-4 checkpoint
    assert train.main([*flags, "--steps", "6", "--out", str(tmp_path / "one")]) == 0

    # The workers end alike; the chief's folder is one run's worth of files, written once.
    recorded = [np.load(tmp_path / f"weights{index}.npz") for index in range(2)]
    for name in recorded[0].files:
        np.testing.assert_array_equal(recorded[1][name], recorded[0][name], err_msg=name)
    assert _run_files(run) == _run_files(tmp_path / "one")
    with open(run / "metrics.csv") as file:
        assert [line.split(",")[0] for line in file] == ["step", "2", "4", "6"]
    assert not [path for index in range(2) for path in (tmp_path / f"tmp{index}").iterdir()]
    assert_trained_alike(checkpoint_values(tmp_path / "one"), checkpoint_values(run), steps=6)

    # A worker that cannot read the chief's folder (no shared filesystem) would resume from
    # another step: both refuse, with the fix.
    shutil.copytree(run, tmp_path / "unshared0")
    for stderr in workers(8, str(tmp_path / "unshared{index}"), expect_failure=True):
        assert "error: the workers resumed" in stderr and "from different steps (0, 6)" in stderr
        assert "on a filesystem they share" in stderr and "Traceback" not in stderr


def _signal_one_worker(tmp_path: pathlib.Path, flags: list[str], signalled: int,
                       stop_signal: signal.Signals, when: str) -> list[tuple[str, str]]:
    """Starts the training command as two workers, sends `stop_signal` to worker `signalled`
    once its stdout matches `when`, and returns the workers' (stdout, stderr) once both have
    exited with the signal's exit code (or fails the test)."""
    with _started_workers(tmp_path, *flags, module="training.train") as (processes, logs):
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        while not re.search(when, _outputs(logs)[signalled][0], re.MULTILINE):
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                _fail_showing_stderr(f"worker {signalled} did not print {when!r}", processes,
                                     _outputs(logs))
            time.sleep(0.1)
        processes[signalled].send_signal(stop_signal)
        problem = _wait(processes, time.monotonic() + STOP_TIMEOUT_S,
                        expected=cli.EXIT_SIGNAL[stop_signal])
        outputs = _outputs(logs)
    if problem:
        _fail_showing_stderr(problem, processes, outputs)
    for _, stderr in outputs:
        assert "Run the same command to resume" in stderr and "Traceback" not in stderr
    # The other worker learnt of the signal from the cluster; the chief wrote the checkpoint.
    assert f"{stop_signal.name} reached another worker" in outputs[1 - signalled][1]
    assert not [path for index in range(2) for path in (tmp_path / f"tmp{index}").iterdir()]
    return outputs


def _stop_steps(outputs: list[tuple[str, str]], stop_signal: signal.Signals) -> list[list[str]]:
    return [re.findall(rf"Stopped by {stop_signal.name} at step (\d+)", err)
            for _, err in outputs]


@pytest.mark.multiworker
@pytest.mark.parametrize("signalled, stop_signal", [(1, signal.SIGTERM), (0, signal.SIGINT)],
                         ids=["term-worker-1", "ctrl-c-chief"])
def test_a_signal_to_one_worker_stops_both_after_the_same_step_and_the_run_resumes(
        tmp_path, signalled, stop_signal):
    run = tmp_path / "run"
    # Rows and saves far apart: the run folder's only checkpoint is the stop's.
    flags = [*_small_run_flags(tmp_path), "--log-every", "1000", "--sample-every", "1000",
             "--checkpoint-every", "1000", "--strategy", "multi_worker", "--out", str(run)]
    # After a progress line: after the first step.
    outputs = _signal_one_worker(tmp_path, [*flags, "--steps", "10000"], signalled,
                                 stop_signal, when=r"^step \d+/10000")

    stops = _stop_steps(outputs, stop_signal)
    assert len(stops[0]) == 1 and stops[1] == stops[0], stops
    step = int(stops[0][0])
    assert [path.name for path in (run / "checkpoints").glob("ckpt-*.index")] == [
        f"ckpt-{step}.index"]

    stdouts = _run_workers(tmp_path, *flags, "--steps", str(step + 2), module="training.train",
                           timeout_s=600)
    for stdout in stdouts:
        assert f" from step {step} (" in stdout, stdout
    assert (run / "checkpoints" / f"ckpt-{step + 2}.index").exists()


@pytest.mark.multiworker
def test_a_signal_to_one_worker_as_tensorflow_starts_stops_both_before_the_first_step(tmp_path):
    # Before the strategy exists: the other worker would wait for this one for ever.
    outputs = _signal_one_worker(
        tmp_path, [*_small_run_flags(tmp_path), "--strategy", "multi_worker", "--steps", "10",
                   "--out", str(tmp_path / "run")],
        signalled=1, stop_signal=signal.SIGTERM, when="^starting TensorFlow")
    assert _stop_steps(outputs, signal.SIGTERM) == [["0"], ["0"]]
    assert "SIGTERM noted" in outputs[1][1]


def test_a_signal_during_a_multi_worker_export_ends_the_export_then_the_run(tmp_path):
    # Workers export together, so a signal to one is acted on after the export, by each.
    port, = _free_ports(1)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="-1", TF_CONFIG=json.dumps(
        {"cluster": {"worker": [f"localhost:{port}"]}, "task": {"type": "worker", "index": 0}}))
    process = subprocess.run(
        [sys.executable, "-m", "tests.training.train_signalled_at_export",
         *_small_run_flags(tmp_path)[:-1], "--strategy", "multi_worker", "--steps", "2",
         "--out", str(tmp_path / "run"), "--saved-models", str(tmp_path / "saved_models")],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)

    assert process.returncode == cli.EXIT_SIGNAL[signal.SIGTERM], process.stderr
    assert "Stopped by SIGTERM after the run's end: it is complete at step 2" in process.stderr
    assert "Traceback" not in process.stderr
    assert (tmp_path / "saved_models" / "run" / "saved_model.pb").exists()


@pytest.mark.multiworker
def test_upstream_canary_keras_fit_still_fails_on_two_workers_without_the_mixin(tmp_path):
    """UPSTREAM CANARY (keras-team/keras#20585): when this fails, Keras has fixed a failure.

    Then check whether `MultiWorkerFitMixin` still needs the matching override:
    `_maybe_symbolic_build` for "(x, y) batches", `make_train_function` for "GAN".
    """
    stdouts = _run_workers(tmp_path, "--expect-upstream-failures")
    for stdout in stdouts:
        line = next(line for line in stdout.splitlines() if line.startswith(worker.FAILURES_TAG))
        failures = json.loads(line[len(worker.FAILURES_TAG):])

        nested = failures["(x, y) batches"]
        assert "_maybe_symbolic_build" in nested["keras_functions"], nested
        assert nested["error"].startswith("ValueError: Attempt to convert a value (PerReplica")

        scalar_logs = failures["GAN"]
        assert "reduce_per_replica" in scalar_logs["keras_functions"], scalar_logs
        assert scalar_logs["error"].startswith(
            "ValueError: Invalid reduction dimension 0 for input with 0 dimensions")
