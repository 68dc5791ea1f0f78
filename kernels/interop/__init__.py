"""Luna detections and the formats other ComfyUI graphs carry, one module each: Impact-Pack SEGS (`segs`), core
BOUNDING_BOX lists (`bounding_boxes`), typed-in boxes (`typed_boxes`); the checks they share (`validation`) and the
SEGS-filter-style detection filter (`filter`)."""
