"""An ONNX Runtime session over an exported graph, run through IO binding.

Every run goes through IO binding, so on CUDA the inputs and outputs stay on the device and only the requested
outputs are copied back. Which provider the session runs on, and why: ``providers``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from atman_onnx.core.contract import (
    EMBEDDINGS_FILE,
    GRAPH_FILE,
    Manifest,
    load_manifest,
    past_names,
    present_names,
    row_past_names,
)
from atman_onnx.runtime.device import copier, free_memory_mb
from atman_onnx.runtime.providers import DEVICE_TYPE, open_session

log = logging.getLogger("atman_onnx")


class Graph:
    """An exported folder ready to run: manifest, session, and IO-bound calls to the graph.

    A resident graph (the default on CUDA; ``resident=True`` on CPU runs the same path on host memory) keeps keys
    and values on its device as OrtValues: a plan's unperturbed keys and values go there once (``shared_past``),
    each batch's shared past is cut from them on the device, a batch fed in query chunks carries its rows' keys and
    values there from chunk to chunk (``run``'s ``keep``, ``extend``), and only label log-probs come back. Where no
    CUDA runtime can be reached for the copies on the device, a CUDA graph is not resident (host arrays per call).
    ``free_mb`` is a CUDA device's free memory when the graph opened (None on CPU, or where nothing answers).
    """

    def __init__(
        self,
        folder: str | Path,
        provider: str | None = None,
        threads: int | None = None,
        resident: bool | None = None,
    ):
        self.folder = Path(folder)
        self.manifest: Manifest = load_manifest(self.folder)
        self.session, self.provider_note = open_session(self.folder / GRAPH_FILE, provider, threads)
        used = self.session.get_providers()[0]
        self.device = DEVICE_TYPE[used]
        self.device_id = int(self.session.get_provider_options().get(used, {}).get("device_id", 0))
        layers = self.manifest.dims["num_layers"]
        self.past_names, self.present_names = past_names(layers), present_names(layers)
        self.row_past_names = row_past_names(layers) if self.manifest.row_cache else []
        # a graph that takes input embeddings (contract version 2) looks token ids up in the text embedding matrix
        self.embeddings = np.load(self.folder / EMBEDDINGS_FILE, mmap_mode="r") if self.manifest.takes_embeds else None
        self.free_mb = free_memory_mb(self.device_id) if self.device == "cuda" else None
        wanted = self.device == "cuda" if resident is None else resident
        self.copier = copier(self.device, self.device_id) if wanted else None
        self.resident = self.copier is not None
        self._kept: tuple[tuple, tuple[np.ndarray, ...], list[ort.OrtValue]] | None = None  # the last plan's cache
        self._lock = threading.Lock()
        log.info(self.provider_note)
        if wanted and not self.resident:
            log.info("keys and values go through the host: no CUDA runtime was found for copies on the device")

    def empty_past(self, batch: int = 1) -> list[np.ndarray]:
        """A cache of length 0 (of ``batch`` rows): the call then runs over the whole sequence."""
        shape = (batch, self.manifest.dims["kv_heads"], 0, self.manifest.dims["head_dim"])
        return [np.zeros(shape, dtype=np.float32) for _ in self.past_names]

    def embed(self, ids: np.ndarray | list[int]) -> np.ndarray:
        """Input embeddings [..., hidden] of token ids, from the text embedding matrix of a graph that takes
        embeddings (contract version 2)."""
        assert self.embeddings is not None, "a graph that takes token ids has no embedding matrix"
        return np.ascontiguousarray(self.embeddings[np.asarray(ids, dtype=np.int64)], dtype=np.float32)

    def first_input(self, inputs: np.ndarray) -> tuple[str, np.ndarray]:
        """The graph's first input for ``inputs``: token ids [batch, seq] (looked up in the embedding matrix when
        the graph takes embeddings) or input embeddings [batch, seq, hidden]."""
        if inputs.ndim == 3:
            return "inputs_embeds", np.ascontiguousarray(inputs, dtype=np.float32)
        if self.embeddings is not None:
            return "inputs_embeds", self.embed(inputs)
        return "input_ids", np.ascontiguousarray(inputs, dtype=np.int64)

    def run(
        self,
        inputs: np.ndarray,
        attention_scale: np.ndarray,
        label_positions: np.ndarray,
        labels: np.ndarray,
        past: list[np.ndarray] | list[ort.OrtValue] | None = None,
        outputs: tuple[str, ...] = ("label_logprobs",),
        run_options: ort.RunOptions | None = None,
        rows: list[np.ndarray] | list[ort.OrtValue] | None = None,
        keep: Collection[str] = (),
    ) -> dict[str, Any]:
        """One call of the graph on a batch of new tokens (ids or embeddings, see ``first_input``), on top of
        ``past`` (keys and values shared by every row) and ``rows`` (each row's own keys and values after them;
        graphs with a row cache only): together the first ``attention_scale.shape[1] - inputs.shape[1]``
        positions. ``past`` and ``rows`` are arrays, or OrtValues on this graph's device (a resident graph's).
        Returns the requested outputs: arrays, but OrtValues left on the device for those named in ``keep``.
        ``run_options`` lets another thread end the call (``terminate``)."""
        name, first = self.first_input(np.asarray(inputs))
        feeds = {
            name: first,
            "attention_mask": np.ones(attention_scale.shape, dtype=np.int64),
            "attention_scale": np.ascontiguousarray(attention_scale, dtype=np.float32),
            "label_positions": np.ascontiguousarray(label_positions, dtype=np.int64),
            "labels": np.ascontiguousarray(labels, dtype=np.int64),
        }
        cache = self.empty_past() if past is None else past
        feeds.update((name, _as_float32(a)) for name, a in zip(self.past_names, cache))
        if self.row_past_names:
            own = self.empty_past(len(first)) if rows is None else rows
            feeds.update((n, _as_float32(a)) for n, a in zip(self.row_past_names, own))
        elif rows is not None:
            raise ValueError("this graph takes no row cache (contract version 1 or 2)")
        binding = self.session.io_binding()
        for name, array in feeds.items():
            if isinstance(array, ort.OrtValue):
                binding.bind_ortvalue_input(name, array)
            elif self.device == "cpu":
                binding.bind_cpu_input(name, array)
            else:
                binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, self.device, self.device_id))
        for name in outputs:
            binding.bind_output(name, self.device, self.device_id)
        self.session.run_with_iobinding(binding, run_options)
        if not keep:
            return dict(zip(outputs, binding.copy_outputs_to_cpu()))
        # an array of a CPU OrtValue shares its memory: copied, so that it outlives the value
        return {
            name: value if name in keep else np.array(value.numpy())
            for name, value in zip(outputs, binding.get_outputs())
        }

    def shared_past(self, cache: Sequence[np.ndarray], start: int) -> list[np.ndarray] | list[ort.OrtValue]:
        """The keys and values every row of a batch fed from ``start`` shares: each layer's
        ``cache[:, :, :start]`` of a plan's cache (``Shared.cache``). A resident graph cuts them on its device from
        the plan's cache, which it copies there once per plan: it keeps the last plan's, known by the memory of
        its arrays (so that the same plan unpickled again onto the same memory, as from Ray's object store, is
        known too), and holds those arrays while it keeps them, so that no other plan's can take their place."""
        if not self.resident or start == 0 or not cache:
            return [layer[:, :, :start] for layer in cache]
        return self._joined([[(value, 0, start)] for value in self._uploaded(cache)])

    def extend(
        self, rows: list[np.ndarray] | list[ort.OrtValue] | None, new: list[np.ndarray] | list[ort.OrtValue]
    ) -> list[np.ndarray] | list[ort.OrtValue]:
        """Each layer's row cache ``rows`` (None: none yet) followed by a call's ``new`` keys and values (axis 2):
        on the device for OrtValues."""
        if rows is None:
            return list(new)
        if not isinstance(new[0], ort.OrtValue):
            return [np.concatenate(pair, axis=2) for pair in zip(rows, new)]
        return self._joined([[(old, 0, old.shape()[2]), (value, 0, value.shape()[2])] for old, value in zip(rows, new)])

    def _uploaded(self, cache: Sequence[np.ndarray]) -> list[ort.OrtValue]:
        """A plan's cache as OrtValues on this graph's device, copied there once per plan."""
        key = tuple((a.__array_interface__["data"][0], a.shape, a.strides, a.dtype.str) for a in cache)
        with self._lock:
            if self._kept is None or self._kept[0] != key:
                self._kept = None  # the last plan's values go before this plan's come
                values = [
                    ort.OrtValue.ortvalue_from_numpy(
                        np.ascontiguousarray(a, dtype=np.float32), self.device, self.device_id
                    )
                    for a in cache
                ]
                self._kept = (key, tuple(cache), values)
            return self._kept[2]

    def _joined(self, layers: list[list[tuple[ort.OrtValue, int, int]]]) -> list[ort.OrtValue]:
        """Per layer, a new OrtValue on this graph's device [rows, heads, n, head_dim]: positions [a, b) (axis 2)
        of each of its parts (float32 OrtValues [rows, heads, positions, head_dim] there) one after another,
        copied on the device."""
        assert self.copier is not None  # only a resident graph (one with a copier) joins on the device
        self.copier.synchronize()  # the parts were written by calls or copies that may still be queued
        out = []
        for parts in layers:
            rows, heads, _, dim = parts[0][0].shape()
            total = sum(b - a for _, a, b in parts)
            joined = ort.OrtValue.ortvalue_from_shape_and_type(
                [rows, heads, total, dim], np.float32, self.device, self.device_id
            )
            item, at = np.dtype(np.float32).itemsize, 0
            for value, a, b in parts:
                if value.data_type() != "tensor(float)" or value.shape()[:2] != [rows, heads]:
                    raise ValueError(f"cannot join {value.data_type()} {value.shape()} to [{rows}, {heads}, ., {dim}]")
                self.copier.copy(
                    joined.data_ptr() + at * dim * item,
                    total * dim * item,
                    value.data_ptr() + a * dim * item,
                    value.shape()[2] * dim * item,
                    (b - a) * dim * item,
                    rows * heads,
                )
                at += b - a
            out.append(joined)
        self.copier.synchronize()  # a copy within device memory returns before it is done
        return out


def _as_float32(value: np.ndarray | ort.OrtValue) -> np.ndarray | ort.OrtValue:
    """Keys or values as a graph input: an OrtValue as it is, an array contiguous float32."""
    return value if isinstance(value, ort.OrtValue) else np.ascontiguousarray(value, dtype=np.float32)
