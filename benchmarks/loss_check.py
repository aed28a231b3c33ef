"""Does a change to the trainer's forward pass keep the loss? ``python -m benchmarks.loss_check TEXT [FAST_LSTM_PY]``

Trains the suite's model (2 x LSTM 256, batch 64 x 100) for 150 steps from seed 0 on the first
90 % of TEXT (characters), through the trainer's compiled step with ``training_forward`` taken
from FAST_LSTM_PY (a copy of ``generator/models/fast_lstm.py``, for example from an older
commit; the installed one by default), then prints the mean training loss of each 25 steps and
the loss on 20 batches of the last 10 %. Two versions that compute the same gradients print the
same figures to about four decimals.
"""

from __future__ import annotations

import importlib.util
import sys
from unittest import mock

import numpy as np


def main(argv=None) -> str:
    from benchmarks.common import quiet_tensorflow

    quiet_tensorflow()
    import keras
    import tensorflow as tf

    from benchmarks.train_speed import DEFAULT_SIZES, run_config
    from generator.data.dataset import WindowSampler, to_tf_dataset
    from generator.data.tokenizers.chars import CharTokenizer
    from generator.models import fast_lstm
    from generator.training import steps

    argv = sys.argv[1:] if argv is None else argv
    module = fast_lstm
    if len(argv) > 1:
        spec = importlib.util.spec_from_file_location("fast_lstm_under_test", argv[1])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    text = open(argv[0], encoding="utf-8").read()
    tokenizer = CharTokenizer.fit([text])
    ids = np.array(tokenizer.encode(text), np.uint16)
    cut = int(len(ids) * 0.9)
    keras.utils.set_random_seed(0)
    config = run_config({**DEFAULT_SIZES, "vocab": tokenizer.vocab_size})
    strategy = tf.distribute.get_strategy()
    with mock.patch.object(steps.models, "training_forward", module.forward):
        model, optimizer = steps.build(config, strategy)
        train_step = steps.make_train_step(strategy, model, optimizer, config)
        eval_step = steps.make_eval_step(model, config)
        tokens = tf.constant(float(config.batch_size * config.seq_len))
        batches = to_tf_dataset(WindowSampler(ids[:cut], config.seq_len, config.batch_size, seed=0), 0)
        losses = [float(train_step(batch, tokens)) for batch in batches.take(150)]
        total, count = 0.0, 0
        for x, y in to_tf_dataset(WindowSampler(ids[cut:], config.seq_len, config.batch_size, seed=1), 0).take(20):
            summed, n = eval_step(x, y)
            total, count = total + float(summed), count + int(n)
    means = " ".join(f"{np.mean(losses[i : i + 25]):.4f}" for i in range(0, 150, 25))
    line = f"train loss per 25 steps {means}; validation {total / count:.4f}"
    print(line)
    return line


if __name__ == "__main__":
    main()
