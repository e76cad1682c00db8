"""The library is a guest in its caller's process: it changes nothing global.

Each scenario runs in a fresh interpreter, the way an astronomer mixes bgopt with their
own TensorFlow and Keras in a notebook or a pipeline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

# Without TF_CPP_MIN_LOG_LEVEL from the test environment: what the user's process has.
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "BGOPT_"))}

FIT = ("import bgopt_plugin as bgopt\n"
       "from bgopt_plugin.data.synthetic import make_scene\n"
       "res = bgopt.fit_background(make_scene('galaxy', shape=(64, 96)).image, seed=1, epochs=40)\n"
       "assert res.background.shape == (64, 96) and res.epochs_run > 0\n")


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_keras_and_tensorflow_work_as_usual_after_a_fit():
    code = FIT + (
        "import sys\n"
        "from tensorflow.keras import layers\n"
        "import keras, tensorflow as tf\n"
        "dense = keras.layers.Dense(2)\n"
        "total = int(tf.data.Dataset.range(4).reduce(tf.constant(0, tf.int64), lambda a, x: a + x))\n"
        "v1 = tf.compat.v1\n"
        "print(json.dumps([layers.Dense is keras.layers.Dense, total, callable(v1.placeholder),\n"
        "                  None in list(tf.__path__), [k for k, m in sys.modules.items() if m is None\n"
        "                                               and k.split('.')[0] in ('keras', 'tensorflow')]]))\n")
    assert json.loads(_run("import json\n" + code)) == [True, 6, True, False, []]


def test_a_fit_after_tensorflow_has_run():
    # TensorFlow's runtime is started (an op, then a tiny Keras fit): its thread pools
    # can no longer be set, and bgopt must not try.
    code = (
        "import json, numpy as np, tensorflow as tf, keras\n"
        "tf.constant(1.0) + 1\n"
        "model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])\n"
        "model.compile(optimizer='adam', loss='mse')\n"
        "model.fit(np.ones((8, 3)), np.ones((8, 1)), epochs=1, verbose=0)\n"
        "threads = (tf.config.threading.get_intra_op_parallelism_threads(),\n"
        "           tf.config.threading.get_inter_op_parallelism_threads())\n"
        + FIT +
        "after = (tf.config.threading.get_intra_op_parallelism_threads(),\n"
        "         tf.config.threading.get_inter_op_parallelism_threads())\n"
        "model.fit(np.ones((8, 3)), np.ones((8, 1)), epochs=1, verbose=0)\n"
        "print(json.dumps([threads == after, bool(np.isfinite(res.corrected).all())]))\n")
    assert json.loads(_run(code)) == [True, True]


def test_environment_threads_and_loggers_are_left_as_found():
    # Only what a plain ``import tensorflow`` itself changes may differ afterwards.
    probe = (
        "import json, logging, os\n"
        "before = dict(os.environ)\n"
        "{body}"
        "import tensorflow as tf\n"
        "from absl import logging as absl_logging\n"
        "changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))\n"
        "print(json.dumps([changed, tf.config.threading.get_intra_op_parallelism_threads(),\n"
        "                  tf.config.threading.get_inter_op_parallelism_threads(),\n"
        "                  tf.get_logger().level, absl_logging.get_verbosity(),\n"
        "                  os.environ.get('TF_XLA_FLAGS')]))\n")
    plain = json.loads(_run(probe.format(body="")))
    with_bgopt = json.loads(_run(probe.format(body=FIT)))
    assert set(with_bgopt[0]) <= set(plain[0]), with_bgopt[0]
    assert with_bgopt[1:] == plain[1:]


def test_the_command_line_sets_its_own_process():
    # The bgopt command (a host that owns its process) sets, in one place, what the
    # library leaves alone: quiet TensorFlow logs, one thread, the XLA cache.
    code = (
        "import json, os\n"
        "from bgopt_plugin.frontend.process import own_process, import_tensorflow_during\n"
        "own_process()\n"
        "import_tensorflow_during(lambda: None)\n"
        "import tensorflow as tf\n"
        "print(json.dumps([os.environ.get('TF_CPP_MIN_LOG_LEVEL'),\n"
        "                  tf.config.threading.get_intra_op_parallelism_threads(),\n"
        "                  '--tf_xla_persistent_cache_directory' in os.environ.get('TF_XLA_FLAGS', '')]))\n")
    level, threads, cache = json.loads(_run(code))
    assert level == "3" and threads == 1
    from bgopt_plugin.frontend.process import CACHE_SINCE, _tf_version

    assert cache == (_tf_version() >= CACHE_SINCE)
