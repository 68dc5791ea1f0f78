"""LunaSAM3Daemon: one SAM3 per (checkpoint, device, dtype), loaded on first use and managed by ComfyUI's memory manager.

A slot holds the detector (transformers' Sam3Model: image encoder, text encoder, DETR heads) and, once something tracks
over frames, the same file's video tracker (Sam3TrackerVideoModel without an image encoder, and its neck): two
ModelPatchers, loaded and evicted on their own, one image encoder between them.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass

import torch

import comfy.model_management as mm
import comfy.model_patcher

from .. import validation
from . import checkpoints, models_folder
from .inference import detect
from .tracking import track, video_model

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DEVICES = ("auto", "cpu")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_LOCK = threading.RLock()


class Sam3Module(torch.nn.Module):
    """The container ComfyUI's ModelPatcher moves between devices: the transformers Sam3Model plus a settable `device`."""

    def __init__(self, detector: torch.nn.Module, dtype: torch.dtype):
        super().__init__()
        self.detector = detector
        self.dtype_ = dtype
        self.device = torch.device("cpu")

    def get_dtype(self) -> torch.dtype:
        """The weights' dtype (ModelPatcher.model_dtype reads it)."""
        return self.dtype_


class Sam3TrackerModule(torch.nn.Module):
    """The tracker's container for ComfyUI's ModelPatcher: Sam3TrackerVideoModel (no image encoder), its neck, and the
    video config read with them."""

    def __init__(self, tracker: torch.nn.Module, neck: torch.nn.Module, config, dtype: torch.dtype):
        super().__init__()
        self.tracker = tracker
        self.neck = neck
        self.video_config = config
        self.dtype_ = dtype
        self.device = torch.device("cpu")

    def get_dtype(self) -> torch.dtype:
        return self.dtype_


class Sam3Patcher(comfy.model_patcher.ModelPatcher):
    """A ModelPatcher that never half-unloads SAM3 and tells its slot when ComfyUI takes it off the device."""

    slot: "weakref.ReferenceType[Sam3Slot] | None" = None

    def partially_unload(self, device_to, memory_to_free=0, force_patch_weights=False) -> int:
        """Free nothing piecemeal, so ComfyUI unloads SAM3 whole (its plain torch layers cannot run half offloaded)."""
        return 0

    def detach(self, unpatch_all: bool = True) -> torch.nn.Module:
        """Move SAM3 off its device once no detection is running, then tell the slot."""
        slot = self.slot() if self.slot is not None else None
        if slot is None:
            return super().detach(unpatch_all)
        with slot.lock:
            model = super().detach(unpatch_all)
            if unpatch_all and any(self is part for part in (slot.patcher, slot.tracker_patcher)):
                slot.evicted(self)
        return model


@dataclass(frozen=True)
class Sam3Key:
    """What makes two SAM3 models the same model: the checkpoint file, the device and the dtype."""

    path: str
    device: str
    dtype: str


class Sam3Slot:
    """One SAM3 model of the daemon: its detector and (for tracking) its tracker, each loaded lazily with its own
    ModelPatcher; all slots share one lock."""

    def __init__(self, key: Sam3Key, name: str):
        self.key = key
        self.name = name
        self.lock = _LOCK
        self.patcher: Sam3Patcher | None = None
        self.tracker_patcher: Sam3Patcher | None = None
        self.loads = 0
        self.evictions = 0
        self.tracker_loads = 0
        self.tracker_evictions = 0
        self.last_load_seconds = 0.0

    @property
    def load_device(self) -> torch.device:
        return torch.device(self.key.device)

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.key.dtype]

    def _patcher(self, module: torch.nn.Module) -> Sam3Patcher:
        offload = mm.unet_offload_device() if self.load_device.type != "cpu" else torch.device("cpu")
        patcher = Sam3Patcher(module, load_device=self.load_device, offload_device=offload)
        patcher.slot = weakref.ref(self)
        return patcher

    def _build(self) -> Sam3Patcher:
        start = time.perf_counter()
        patcher = self._patcher(Sam3Module(checkpoints.load_model(self.key.path, self.dtype), self.dtype))
        self.loads += 1
        self.last_load_seconds = time.perf_counter() - start
        logging.info("[Luna] SAM3 %s loaded (%s, %s) in %.1f s", self.name, self.key.device, self.key.dtype,
                     self.last_load_seconds)
        return patcher

    def _build_tracker(self) -> Sam3Patcher:
        start = time.perf_counter()
        tracker, neck, config = checkpoints.load_tracker(self.key.path, self.dtype)
        patcher = self._patcher(Sam3TrackerModule(tracker, neck, config, self.dtype))
        self.tracker_loads += 1
        logging.info("[Luna] SAM3 %s tracker loaded (%s, %s) in %.1f s", self.name, self.key.device, self.key.dtype,
                     time.perf_counter() - start)
        return patcher

    def held(self) -> bool:
        """Whether the detector's weights are in memory (on the device or offloaded)."""
        patcher = self.patcher
        return patcher is not None and patcher.model.detector is not None

    def tracker_held(self) -> bool:
        """Whether the tracker's weights are in memory (on the device or offloaded)."""
        patcher = self.tracker_patcher
        return patcher is not None and patcher.model.tracker is not None

    def _ensure_detector(self) -> Sam3Patcher:
        if not self.held():
            if self.patcher is not None:
                self.patcher.slot = None
            self.patcher = self._build()
        return self.patcher

    def model(self) -> torch.nn.Module:
        """The Sam3Model on its device, loading it from disk or bringing it back from the offload device as needed."""
        with self.lock:
            patcher = self._ensure_detector()
            mm.load_models_gpu([patcher], force_full_load=True)
            return patcher.model.detector

    def video_model(self) -> torch.nn.Module:
        """transformers' Sam3VideoModel of this checkpoint on its device: the detector and the tracker loaded (each from
        disk or back from the offload device as needed) and put into one video model that holds no weights of its own.
        Sam3TrackerMissing, before anything loads, where the checkpoint holds no tracker."""
        with self.lock:
            if not self.tracker_held():
                tracker = self._build_tracker()  # reads and checks the tracker before the detector loads
                if self.tracker_patcher is not None:
                    self.tracker_patcher.slot = None
                self.tracker_patcher = tracker
            detector = self._ensure_detector()
            mm.load_models_gpu([detector, self.tracker_patcher], force_full_load=True)
            part = self.tracker_patcher.model
            return video_model(detector.model.detector, part.tracker, part.neck, part.video_config)

    def evicted(self, patcher: Sam3Patcher) -> None:
        """ComfyUI unloaded the detector or the tracker: on the CPU its weights are dropped (RAM is what was asked
        back), on a GPU they stay offloaded.

        The patcher and its container outlive the weights: ComfyUI is still iterating its loaded-model list, which a
        finalizer on the container would edit under it.
        """
        drop = self.load_device == patcher.offload_device
        if patcher is self.tracker_patcher:
            self.tracker_evictions += 1
            if drop:
                patcher.model.tracker = patcher.model.neck = None
        else:
            self.evictions += 1
            if drop:
                patcher.model.detector = None

    def release(self) -> None:
        """Drop the detector's and the tracker's weights (unloading them through ComfyUI first); the next use loads
        them again."""
        with self.lock:
            for patcher in (self.patcher, self.tracker_patcher):
                if patcher is None:
                    continue
                for loaded in [m for m in mm.current_loaded_models if m.model is patcher]:
                    loaded.model_unload()
                    mm.current_loaded_models.remove(loaded)
                patcher.slot = None
            self.patcher = self.tracker_patcher = None

    def on_device(self, patcher: Sam3Patcher | None = None) -> bool:
        """Whether ComfyUI counts the detector (or `patcher`) as loaded on its device now."""
        patcher = self.patcher if patcher is None else patcher
        return patcher is not None and any(m.model is patcher for m in mm.current_loaded_models)

    def report(self) -> dict:
        """What this slot holds: checkpoint (its name in the sam3 models folder, no path on disk), device, dtype, bytes,
        residency and counters, for the detector and (tracker_*) the tracker."""
        patcher, tracker = self.patcher, self.tracker_patcher
        held, tracker_held = self.held(), self.tracker_held()
        where = str(next(patcher.model.parameters()).device) if held else None
        return {"checkpoint": self.name, "folder": models_folder.FOLDER, "device": self.key.device,
                "dtype": self.key.dtype, "loaded": held, "on_device": self.on_device(), "weights_on": where,
                "bytes": patcher.model_size() if held else 0, "loads": self.loads, "evictions": self.evictions,
                "tracker_loaded": tracker_held, "tracker_on_device": tracker_held and self.on_device(tracker),
                "tracker_bytes": tracker.model_size() if tracker_held else 0, "tracker_loads": self.tracker_loads,
                "tracker_evictions": self.tracker_evictions}


@dataclass(frozen=True)
class Sam3Handle:
    """The LUNA_SAM3 value: a reference to one daemon slot; the slot lives while a handle does."""

    slot: Sam3Slot

    @property
    def name(self) -> str:
        return self.slot.name

    @property
    def key(self) -> Sam3Key:
        return self.slot.key

    def detect(self, images: torch.Tensor, concepts: list[str], **settings):
        """Run detection under the daemon's lock (see daemon.inference.detect for the settings)."""
        with self.slot.lock:
            return detect(self.slot.model(), images, concepts, **settings)

    def track(self, images: torch.Tensor, concepts: list[str], **settings):
        """Track the concepts over the frames `images` under the daemon's lock (see daemon.tracking.track for the
        settings); Sam3TrackerMissing where the checkpoint holds no tracker."""
        with self.slot.lock:
            return track(self.slot.video_model(), images, concepts, **settings)


def resolve_device(device: str) -> torch.device:
    """'auto' → ComfyUI's torch device; 'cpu' → the CPU."""
    validation.one_of("SAM3 device", device, DEVICES)
    return torch.device(mm.get_torch_device()) if device == "auto" else torch.device("cpu")


def resolve_dtype(precision: str, device: torch.device) -> str:
    """The dtype name for `precision` on `device`: auto → bf16 (else fp16) on CUDA, fp32 elsewhere."""
    validation.one_of("SAM3 precision", precision, PRECISIONS)
    if precision != "auto":
        if device.type == "cpu" and precision == "fp16":
            raise ValueError("fp16 SAM3 is not supported on the CPU; choose fp32 or bf16 there.")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


class LunaSAM3Daemon:
    """The process-wide SAM3 host: one slot per (checkpoint, device, dtype), shared by every node and thread."""

    _instance: "LunaSAM3Daemon | None" = None
    _instance_lock = threading.Lock()

    def __init__(self):
        self._lock = threading.Lock()
        self._slots: "weakref.WeakValueDictionary[Sam3Key, Sam3Slot]" = weakref.WeakValueDictionary()

    @classmethod
    def instance(cls) -> "LunaSAM3Daemon":
        """The daemon of this process."""
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def acquire(self, checkpoint: str, device: str = "auto", precision: str = "auto") -> Sam3Handle:
        """A handle to the slot of (checkpoint, device, precision); nothing is read from disk until the first detection."""
        path = os.path.realpath(models_folder.resolve(checkpoint))
        torch_device = resolve_device(device)
        key = Sam3Key(path, str(torch_device), resolve_dtype(precision, torch_device))
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                slot = Sam3Slot(key, checkpoint)
                self._slots[key] = slot
        return Sam3Handle(slot)

    def slots(self) -> list[Sam3Slot]:
        """The live slots."""
        with self._lock:
            return list(self._slots.values())

    def report(self) -> list[dict]:
        """What the daemon holds, one dict per model (see Sam3Slot.report)."""
        return [slot.report() for slot in self.slots()]

    def release_all(self) -> None:
        """Drop every model's weights; handles stay valid and reload on their next detection."""
        for slot in self.slots():
            slot.release()


def daemon() -> LunaSAM3Daemon:
    """The process-wide LunaSAM3Daemon."""
    return LunaSAM3Daemon.instance()
