"""The harmonizer: a bidirectional LSTM that fills in masked cells of an SATB grid (after DeepBach).

A chorale is a grid ``[steps, 4]`` on 16th notes (``generator.data.tokenizers.voices``); each
cell holds a voices-tokenizer id (``REST`` or a pitch). Some cells are hidden behind ``MASK``
and the model predicts every cell of every step at once::

    frame t  = [S, A, T, B tokens (MASK where hidden), position of t in its beat]
    forward  = LSTM stack over frames 0 .. t-1   (the past)
    backward = LSTM stack over frames t+1 .. end (the future)
    centre   = dense layer over frame t itself   (the other voices at t)
    logits   = dense(concat(forward, backward, centre)) -> [4 voices, vocab]

One model serves all four voices (the four output heads share everything below the last layer),
as in Coconet, rather than DeepBach's model per voice: one forward pass scores every cell, which
is what the batched Gibbs sampler in ``generator.generation.harmonize`` needs. Chosen by
measurement (``benchmarks.harmonizer_voices``; the command and table in docs/results.md, "Harmonizing:
one model or one per voice"): on the JSB train split, 2 layers of 64 units (smaller than bundled, for the shared CPU),
200 steps, validated per hidden cell on the valid split, the shared model reached 2.270 nats
against 2.717 for four per-voice models (this network with the loss restricted to one voice) given
the same total steps (50 each); given 200 steps each (four times the training and parameters) the
per-voice models reached 1.972, but cost three forward passes per Gibbs iteration instead of one
when harmonizing a melody. Whether that advantage lasts to convergence at the bundled size was not
measured.

Input layout (what ``build``'s model takes): int ids ``[batch, steps * 5]``, five per step: the
four voice tokens (vocabulary ids 0 .. vocab-1, ``MASK`` = vocab) and the position in the beat
``POSITION + (step % 4)``; all five share one embedding table and the embeddings of a step are
concatenated. The output is ``[batch, steps * 4, vocab]`` logits, one row per cell (S, A, T, B of
step 0, then of step 1 ...). A document begins with a frame of four ``BOS`` tokens, which the
model sees but is never asked to predict.

Training (``WindowSampler``): windows of ``seq_len`` steps cut from the documents' frames, each
window transposed (the tokenizer's augmentation) and given a random mask: a rate ``p`` drawn
uniformly from (0, 1] hides each cell with probability ``p`` (in half the windows the soprano is
never hidden, the harmonization case). Targets are the hidden cells' tokens and -1 (ignored by
the loss) elsewhere, so the loss is the cross-entropy per hidden cell.

Only built-in Keras layers are used (Bidirectional over stacked LSTM cells, zero padding and
cropping for the one-step shifts), so the model saves and loads with ``safe_mode`` like every other.

Its task (``generator.models.tasks.HARMONIZER``, declared in the registry) tells the trainer to
cut ``WindowSampler``'s windows and to count only the hidden cells, and the API that it is sampled
by ``Generator.harmonize`` and has no left-to-right decoder.
"""

from __future__ import annotations

import keras
import numpy as np

from generator.config import RunConfig
from generator.data import dataset
from generator.data.tokenizers.base import BOS
from generator.errors import ArgumentError

NAME = "harmonizer"
VOICES = 4
CHANNELS = VOICES + 1  # four voice tokens and the position in the beat
STEPS_PER_BEAT = 4  # the position input: step % 4 on the 16th-note grid


def mask_id(vocab_size: int) -> int:
    """The id of MASK in the model's input (one past the tokenizer's vocabulary)."""
    return vocab_size


def position_id(vocab_size: int, step) -> np.ndarray:
    """The input ids of the position in the beat of ``step`` (array or int)."""
    return vocab_size + 1 + np.asarray(step) % STEPS_PER_BEAT


def input_vocab(vocab_size: int) -> int:
    return vocab_size + 1 + STEPS_PER_BEAT


def build(config: RunConfig) -> keras.Model:
    """The model: int ids ``[batch, steps * 5]`` -> logits ``[batch, steps * 4, vocab]`` (see above)."""
    vocab = config.vocab_size
    if vocab < 2:
        raise ValueError("vocab_size must be set before building the model")
    if config.tokenizer != "voices":
        raise ArgumentError(
            "tokenizer", f"must be voices for the harmonizer, which reads SATB grids, not {config.tokenizer}"
        )
    ids = keras.Input(shape=(None,), dtype="int32", name="cells")
    x = keras.layers.Embedding(input_vocab(vocab), config.embedding, name="embedding")(ids)
    frames = keras.layers.Reshape((-1, CHANNELS * config.embedding), name="frames")(x)  # [B, T, 5E]
    if config.dropout > 0:
        frames = keras.layers.Dropout(config.dropout, name="frame_dropout")(frames)
    cells = [keras.layers.LSTMCell(config.units, name=f"lstm_cell_{i + 1}") for i in range(config.layers)]
    stack = keras.layers.RNN(keras.layers.StackedRNNCells(cells, name="stack"), return_sequences=True, name="lstm")
    forward, backward = keras.layers.Bidirectional(stack, merge_mode=None, name="bidirectional")(frames)
    # position t must see frames < t forward and frames > t backward: shift each by one step
    past = keras.layers.Cropping1D((0, 1), name="past_crop")(
        keras.layers.ZeroPadding1D((1, 0), name="past_pad")(forward)
    )
    future = keras.layers.Cropping1D((1, 0), name="future_crop")(
        keras.layers.ZeroPadding1D((0, 1), name="future_pad")(backward)
    )
    centre = keras.layers.Dense(config.units, activation="relu", name="centre")(frames)
    h = keras.layers.Concatenate(name="context")([past, future, centre])
    h = keras.layers.Dense(config.units, activation="relu", name="hidden")(h)
    if config.dropout > 0:
        h = keras.layers.Dropout(config.dropout, name="hidden_dropout")(h)
    logits = keras.layers.Dense(VOICES * vocab, name="logits", dtype="float32")(h)
    logits = keras.layers.Reshape((-1, vocab), name="cell_logits", dtype="float32")(logits)  # [B, T*4, V]
    return keras.Model(ids, logits, name=NAME)


def training_forward(model: keras.Model, tokens, training: bool = False):
    """The trainer's forward pass: the Keras model itself (its loops compile under XLA)."""
    return model(tokens, training=training)


def whole_documents_error() -> ArgumentError:
    return ArgumentError.sentence(
        "the harmonizer trains on whole documents: validate with val_split, or hold out whole documents "
        "(holdout documents)",
        "val_split",
        "holdout",
    )


def model_inputs(grid_ids: np.ndarray, vocab_size: int, first_step: int = 0) -> np.ndarray:
    """``[batch, steps, 4]`` cell ids (MASK allowed) -> the model's ``[batch, steps * 5]`` input."""
    grid_ids = np.asarray(grid_ids)
    batch, steps = grid_ids.shape[:2]
    position = np.broadcast_to(position_id(vocab_size, np.arange(first_step, first_step + steps)), (batch, steps))
    return np.concatenate([grid_ids, position[..., None]], axis=-1).reshape(batch, steps * CHANNELS).astype(np.int32)


# -- training data --------------------------------------------------------------------------------


def document_frames(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Token ids (documents, each BOS first) -> (frames ``[n, 4]``, step in document ``[n]``).

    Each document becomes a frame of four BOS tokens followed by its steps; an incomplete last
    step is dropped. Tokens before the first BOS (not a whole document) are refused.
    """
    ids = np.asarray(ids, dtype=np.int64)
    starts = np.flatnonzero(ids == BOS)
    if len(ids) and (len(starts) == 0 or starts[0] != 0):
        raise whole_documents_error()
    frames, steps = [], []
    for start, end in zip(starts, np.append(starts[1:], len(ids))):
        body = ids[start + 1 : end]
        body = body[: len(body) - len(body) % VOICES].reshape(-1, VOICES)
        frames += [np.full((1, VOICES), BOS), body]
        steps.append(np.arange(-1, len(body)))  # the BOS frame sits at step -1
    if not frames:
        return np.zeros((0, VOICES), np.int64), np.zeros(0, np.int64)
    return np.concatenate(frames), np.concatenate(steps)


class WindowSampler(dataset.WindowSampler):
    """Masked windows of ``seq_len`` steps for the trainer, in place of next-token windows.

    The base class chooses the windows (seeded, resumable, split over devices) among frame
    indices; each batch is transposed (training only) and masked as the module docstring says.
    Yields ``(inputs [rows, seq_len * 5], targets [rows, seq_len * 4])``, targets -1 where not hidden.
    """

    def __init__(
        self,
        ids,
        seq_len,
        batch_size,
        *,
        shuffle=True,
        seed=0,
        augment=None,
        drop_remainder=True,
        segments=None,
        vocab_size=None,
    ):
        if segments is not None and len(segments) > 1:
            raise whole_documents_error()
        self.frames, self.steps = document_frames(ids)
        self.transpose = augment
        vocab = vocab_size
        if vocab is None:
            vocab = int(np.max(ids)) + 1 if len(ids) else 2
        self.vocab_size = vocab
        super().__init__(
            np.arange(len(self.frames), dtype=np.int64),
            seq_len,
            batch_size,
            shuffle=shuffle,
            seed=seed,
            augment=self._pack,
            drop_remainder=drop_remainder,
        )

    def _pack(self, windows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Frame indices ``[rows, L + 1]`` -> ``[inputs | targets | 0]``, so that the base class's
        ``(w[:, :-1], w[:, 1:])`` carries both; ``batches`` unpacks them."""
        index = windows[:, :-1]
        rows, length = index.shape
        cells = self.frames[index]  # [rows, L, 4]
        if self.transpose is not None:
            cells = self.transpose(cells.reshape(rows, -1), rng).reshape(rows, length, VOICES)
        hidden = masks(cells, rng)
        inputs = np.where(hidden, mask_id(self.vocab_size), cells)
        position = position_id(self.vocab_size, self.steps[index])
        inputs = np.concatenate([inputs, position[..., None]], axis=-1).reshape(rows, -1)
        targets = np.where(hidden, cells, -1).reshape(rows, -1)
        return np.concatenate([inputs, targets, np.zeros((rows, 1), np.int64)], axis=1).astype(np.int32)

    def batches(self, epoch, start_batch=0, shard=(0, 1), replicas=1):
        split = self.seq_len * CHANNELS
        for packed, _ in super().batches(epoch, start_batch, shard, replicas):
            yield packed[:, :split], packed[:, split:]


def masks(cells: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Which cells of ``[rows, L, 4]`` to hide: a rate per row drawn from (0, 1], BOS never hidden,
    the soprano kept in half the rows; at least one cell hidden where any can be."""
    rows = cells.shape[0]
    rate = 1.0 - rng.random(rows)  # (0, 1]
    hidden = rng.random(cells.shape) < rate[:, None, None]
    hidden[rng.random(rows) < 0.5, :, 0] = False
    hidden &= cells != BOS
    for row in np.flatnonzero(~hidden.reshape(rows, -1).any(axis=1)):  # nothing hidden: hide one cell
        candidates = np.argwhere(cells[row] != BOS)
        if len(candidates):
            t, v = candidates[rng.integers(len(candidates))]
            hidden[row, t, v] = True
    return hidden
