"""Text concepts tracked over the frames of a clip with transformers' Sam3VideoModel, as LUNA_DETECTION_DATA.

The video model is a shell around the daemon's loaded parts: its detector is the slot's Sam3Model (the one image encoder
both share: the tracker reads the detector's image features through its own neck), its tracker the checkpoint's
Sam3TrackerVideoModel without an image encoder. On a frame where detection runs, transformers' own step does it all:
every concept detected on the frame's features, detections matched to the propagated masklets (per concept), new
objects added with new ids, hot-start removal of spurious tracks. Between detection frames (detect_every > 1) the
tracker alone propagates and remembers, as core ComfyUI's SAM3_VideoTrack does with its detect_interval: transformers'
step minus detection and association, so a frame without detection does not count as one where a track went unmatched.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F

from ..kernels.detections import mask_boxes
from ..luna_types import Detection, DetectionData
from .inference import PromptError, pixel_values
from .tokenizer import tokenize

if TYPE_CHECKING:
    from transformers import Sam3VideoConfig, Sam3VideoModel

MAX_OBJECTS_UNLIMITED = 10000
"""transformers' max_num_objects default (no limit in practice)."""


def video_model(detector: torch.nn.Module, tracker: torch.nn.Module, neck: torch.nn.Module,
                config: "Sam3VideoConfig") -> "Sam3VideoModel":
    """A Sam3VideoModel holding no weights of its own: built on the meta device, then the loaded detector, tracker and
    tracker neck put in its three places (the same modules, wherever ComfyUI has them)."""
    from transformers import Sam3VideoModel

    with torch.device("meta"):
        shell = Sam3VideoModel(config)
    shell.detector_model = detector
    shell.tracker_model = tracker
    shell.tracker_neck = neck
    return shell.eval()


class _Frames(Mapping):
    """The clip's frames as the inference session reads them (`processed_frames`): SAM3's input for one frame at a time,
    made when asked for (as the per-frame path makes it), so the clip is never held at 1008 × 1008 on the device."""

    def __init__(self, images: torch.Tensor, size: int, device: torch.device, dtype: torch.dtype):
        self.images, self.size, self.device, self.dtype = images, size, device, dtype
        self._index: int | None = None
        self._pixels: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self)))

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < len(self):
            raise KeyError(index)
        if index != self._index:
            self._pixels = pixel_values(self.images[index:index + 1], self.size, self.device, self.dtype)[0]
            self._index = index
        return self._pixels


def _no_hub_kernels() -> None:
    """Keep transformers from fetching its mask NMS / hole-filling kernels from the Hub ("kernels-community/cv-utils",
    when the `kernels` package is installed): nothing downloads at run time. Detections and masks are then as the
    per-frame path has them (no NMS, no hole filling)."""
    from transformers.models.sam3_video import modeling_sam3_video

    if modeling_sam3_video.cv_utils_kernel is None:
        modeling_sam3_video.cv_utils_kernel = False


def _track_frame(shell: "Sam3VideoModel", session, frame: int):
    """One frame without detection: image features once, the tracker's propagation, overlap suppression and memory,
    as transformers' _det_track_one_frame does them; no association, so no track counts as unmatched here."""
    from transformers.models.sam3_video.modeling_sam3_video import Sam3VideoSegmentationOutput

    vision = shell.detector_model.get_vision_features(pixel_values=session.get_frame(frame).unsqueeze(0))
    feats, positions = shell.get_vision_features_for_tracker(vision_embeds=vision)
    session.cache.cache_vision_features(frame, {"vision_feats": feats, "vision_pos_embeds": positions})
    masks, scores = shell.run_tracker_propagation(inference_session=session, frame_idx=frame, reverse=False)
    if masks.size(0) > 0:
        metadata: dict = {}
        if shell.suppress_overlapping_based_on_recent_occlusion_threshold > 0.0:
            masks = shell._suppress_overlapping_based_on_recent_occlusion(session, frame, masks, metadata, set(), False)
        shell._tracker_update_memories(session, frame, masks)
        session.obj_id_to_last_occluded = metadata.get("obj_id_to_last_occluded", session.obj_id_to_last_occluded)
        session.obj_id_to_tracker_score_frame_wise[frame].update(zip(session.obj_ids, scores.sigmoid().tolist()))
    return Sam3VideoSegmentationOutput(
        object_ids=list(session.obj_ids),
        obj_id_to_mask={int(i): m.unsqueeze(0) for i, m in zip(session.obj_ids, masks)},
        obj_id_to_score=session.obj_id_to_score,
        obj_id_to_tracker_score=session.obj_id_to_tracker_score_frame_wise[frame],
        removed_obj_ids=session.removed_obj_ids,
        suppressed_obj_ids=session.suppressed_obj_ids[frame],
        frame_idx=frame,
    )


def _forget(shell: "Sam3VideoModel", session, frame: int) -> None:
    """Drop what no later frame reads: full-size masks of past frames, and tracked frames older than the tracker's
    memory (num_maskmem) and object-pointer (max_object_pointers_in_encoder) windows; a clip's state stays bounded."""
    tracker = shell.tracker_model
    window = max(int(tracker.num_maskmem), int(tracker.config.max_object_pointers_in_encoder))
    for outputs in session.output_dict_per_obj.values():
        for stored in outputs.values():
            for t, out in stored.items():
                if t <= frame:
                    out.pop("high_res_masks", None)
        tracked = outputs["non_cond_frame_outputs"]
        for t in [t for t in tracked if t < frame - window]:
            del tracked[t]


def _detections(out, session, labels: dict[int, str], height: int, width: int, mask_threshold: float,
                min_area: float) -> list[Detection]:
    """The frame's objects as Detections: each object's mask at the detected copy's size (its logits' probability
    above mask_threshold, as the per-frame path makes masks), the box its extent; objects the video model hides on this
    frame (suppressed, removed by hot-start) or with an empty mask are absent."""
    hidden = set(out.suppressed_obj_ids or ()) | set(session.hotstart_removed_obj_ids)
    found = []
    for obj_id in sorted(out.obj_id_to_mask):
        if obj_id in hidden or obj_id not in labels:
            continue
        logits = out.obj_id_to_mask[obj_id].float()[None]
        probability = F.interpolate(logits.sigmoid(), size=(height, width), mode="bilinear", align_corners=False)[0, 0]
        mask = (probability > mask_threshold).cpu()
        if not bool(mask.any()) or (min_area > 0 and float(mask.float().mean()) < min_area):
            continue
        box = mask_boxes(mask[None].float())[0][0].tolist()
        found.append(Detection(box=tuple(box), mask=mask, score=float(out.obj_id_to_score.get(obj_id, 0.0)),
                               label=labels[obj_id], image_index=int(out.frame_idx), track_id=int(obj_id)))
    return sorted(found, key=lambda d: (-d.score, d.track_id))


@torch.inference_mode()
def track(shell: "Sam3VideoModel", images: torch.Tensor, concepts: list[str], threshold: float = 0.5,
          max_detections: int = 0, min_area: float = 0.0, detect_every: int = 1, mask_threshold: float = 0.5,
          progress: Callable[[int, int], None] | None = None) -> DetectionData:
    """Every concept tracked over the frames `images` [N, H, W, C] (a clip): detection on frame 0 and every
    `detect_every` frames after, new objects from detections scoring above `threshold`, at most `max_detections`
    objects in the clip (0: no limit). One Detection per object per frame it is present in: `image_index` the frame,
    `track_id` the object (unique across concepts), `label` its concept, `score` its detection score, a bool mask over
    the frame and the box of that mask.

    `progress(done, total)` is called after each frame; it may raise to stop (between frames).
    """
    if images.ndim != 4 or images.shape[-1] < 3:
        raise ValueError(f"SAM3 tracking needs an IMAGE batch of frames [N, H, W, 3]; got shape {tuple(images.shape)}.")
    if not concepts:
        raise PromptError("SAM3 needs at least one concept to look for.")
    if int(detect_every) < 1:
        raise ValueError(f"detect_every must be 1 or more (detection on the first frame and every N frames), got "
                         f"{detect_every}.")
    _no_hub_kernels()
    from transformers.models.sam3_video.modeling_sam3_video import Sam3VideoInferenceSession

    detector = shell.detector_model
    parameter = next(detector.parameters())
    device, dtype = parameter.device, parameter.dtype
    frames, height, width = int(images.shape[0]), int(images.shape[1]), int(images.shape[2])
    shell.score_threshold_detection = float(threshold)
    shell.new_det_thresh = float(threshold)
    # Without the Hub kernel transformers' detection NMS keeps every detection, after an all-pairs mask IoU of
    # detections × detections × 288² that no one reads (26 GB at threshold 0): off, for the same result.
    shell.det_nms_thresh = 0.0
    shell.max_num_objects = int(max_detections) if max_detections > 0 else MAX_OBJECTS_UNLIMITED

    session = Sam3VideoInferenceSession(video_height=height, video_width=width, inference_device=device,
                                        inference_state_device=device, video_storage_device=device, dtype=dtype)
    session.processed_frames = _Frames(images, int(detector.config.vision_config.image_size), device, dtype)
    ids, attention = tokenize(concepts)
    for k, concept in enumerate(concepts):
        prompt = session.add_prompt(concept)
        session.prompt_input_ids[prompt] = ids[k:k + 1].to(device)
        session.prompt_attention_masks[prompt] = attention[k:k + 1].to(device)

    labels: dict[int, str] = {}
    detections: list[Detection] = []
    waiting: list = []
    delay = int(shell.hotstart_delay)
    for frame in range(frames):
        if frame % int(detect_every) == 0:
            out = shell(inference_session=session, frame_idx=frame)
        else:
            out = _track_frame(shell, session, frame)
        for obj_id, prompt in session.obj_id_to_prompt_id.items():
            labels.setdefault(int(obj_id), session.prompts[prompt])
        # As propagate_in_video_iterator: a frame's objects are final once hot-start had `delay` frames to drop them.
        waiting.append(out)
        if delay > 0:
            session.hotstart_removed_obj_ids.update(out.removed_obj_ids)
        ready = len(waiting) if delay <= 0 or frame == frames - 1 else max(0, len(waiting) - delay + 1)
        for done in waiting[:ready]:
            detections.extend(_detections(done, session, labels, height, width, mask_threshold, min_area))
        del waiting[:ready]
        _forget(shell, session, frame)
        if progress is not None:
            progress(frame + 1, frames)
    return DetectionData(detections=tuple(detections), image_size=(width, height),
                         meta={"source": "sam3", "prompts": list(concepts), "threshold": threshold,
                               "mask_threshold": mask_threshold, "min_area": min_area, "max_detections": max_detections,
                               "mode": "track", "detect_every": int(detect_every),
                               "tracks": len({d.track_id for d in detections})})


def tracked_frames(frames: int, detect_every: int) -> list[int]:
    """The frames of a clip of `frames` on which tracking runs detection: the first and every `detect_every` after."""
    return list(range(0, frames, max(1, int(detect_every))))

