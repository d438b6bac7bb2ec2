"""Where the people are: person boxes from OpenPose keypoint JSON or from a boxes / detections JSON.

Every reader returns, per image, a list of `Person` (a box `x, y, w, h` in image pixels, top-left
corner, width, height, plus where it came from); `predict` crops a square around each box
(`inference.crop_box`, enlarged by `--bbox-scale`, 1.2 by default as SPIN's demo enlarges its
OpenPose boxes) and predicts all people of an image in one batch.

OpenPose (`--keypoints FILE_OR_DIR`): the JSON OpenPose writes per image, `{"people": [{...}]}`
with either `pose_keypoints_2d` (OpenPose 1.2+, BODY_25: 75 numbers, x y confidence per point) or
the older `pose_keypoints` (OpenPose 1.0, COCO order: 18 points, 54 numbers; HMR's demo reads it).
Any whole number of (x, y, confidence) triples is accepted (BODY_25, COCO-18, MPI-15, BODY_135):
the box only needs the points. A person's box is the bounding box of the keypoints whose
confidence exceeds `MIN_KEYPOINT_CONFIDENCE` (0.2, the threshold of both SPIN's
`bbox_from_openpose` and HMR's `get_bbox`); a person with fewer than `MIN_KEYPOINTS` such points
or a box of zero width and height is skipped and reported. A folder holds one file per image,
found by the image's stem: `<stem>_keypoints.json` (OpenPose's own naming), `<stem>_openpose.json`
or `<stem>.json`.

Boxes (`--boxes FILE_OR_DIR`), any of:
- `{"<image name>": [[x, y, w, h], [x, y, w, h, score], {"bbox": [x, y, w, h], "score": s}, ...]}`,
  the key an image's file name, its stem or its path;
- COCO-style detection results, `[{"image_id" | "file_name", "bbox": [x, y, w, h], "score",
  "category_id"}, ...]`: `file_name` matches the image's file name, `image_id` its stem (as a
  number, so 397133 matches 000000397133.jpg); only category 1 (COCO's person) is kept when
  `category_id` is given;
- SPIN's single-box file `{"bbox": [x, y, w, h]}`, or a bare list of boxes `[[x, y, w, h], ...]`
  (every image gets them);
- a folder of per-image files in the first or last form, `<stem>_bbox.json` or `<stem>.json`.
Boxes whose score is below `--min-score` are dropped and counted. A file that is not JSON, or
not one of these forms, raises `PeopleError` naming the file; an image that the file names no
person for is that image's error.
"""

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

MIN_KEYPOINT_CONFIDENCE = 0.2  # SPIN's bbox_from_openpose and HMR's get_bbox
MIN_KEYPOINTS = 2  # a box needs two points at least
PERSON_CATEGORY_ID = 1  # COCO's 'person'
DEFAULT_MIN_SCORE = 0.5
KEYPOINT_SUFFIXES = ("_keypoints.json", "_openpose.json", ".json")
BOX_SUFFIXES = ("_bbox.json", ".json")


class PeopleError(ValueError):
    """A keypoint or box file cannot be used for an image; the message names the file and why."""


@dataclasses.dataclass(frozen=True)
class Person:
    """One person: box (x, y, w, h) in image pixels, and where it came from."""

    box: tuple[float, float, float, float]
    source: str  # e.g. 'openpose:a_keypoints.json#0', 'boxes:dets.json#3'
    score: float | None = None
    keypoints: np.ndarray | None = None  # (K, 3) OpenPose x, y, confidence, when read from keypoints


@dataclasses.dataclass
class Found:
    """The people of one image, and those left out (each with its reason)."""

    people: list[Person]
    skipped: list[str] = dataclasses.field(default_factory=list)


def _load_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise PeopleError(f"{path}: no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PeopleError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:
        raise PeopleError(f"{path}: cannot read ({e})") from None


def box_from_keypoints(
    keypoints: Sequence[Sequence[float]], min_confidence: float = MIN_KEYPOINT_CONFIDENCE
) -> tuple[float, float, float, float] | None:
    """(K, 3) x, y, confidence -> the bounding box (x, y, w, h) of the points whose confidence
    exceeds `min_confidence`, or None (fewer than `MIN_KEYPOINTS` such points, or all at one spot)."""
    kp = np.asarray(keypoints, np.float64).reshape(-1, 3)
    good = kp[(kp[:, 2] > min_confidence) & np.all(np.isfinite(kp), axis=1)]
    if len(good) < MIN_KEYPOINTS:
        return None
    lo, hi = good[:, :2].min(0), good[:, :2].max(0)
    if max(hi - lo) <= 0:
        return None
    return float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])


def read_openpose(path: str, min_confidence: float = MIN_KEYPOINT_CONFIDENCE) -> Found:
    """One OpenPose JSON file -> its people (boxes from the confident keypoints); raises
    `PeopleError` naming the file when it is malformed or holds no usable person."""
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("people"), list):
        raise PeopleError(
            f"{path}: expected OpenPose JSON, an object with a 'people' list, found "
            f"{type(data).__name__}{' without people' if isinstance(data, dict) else ''}"
        )
    found = Found([])
    name = os.path.basename(path)
    for i, p in enumerate(data["people"]):
        key = next((k for k in ("pose_keypoints_2d", "pose_keypoints") if isinstance(p, dict) and k in p), None)
        if key is None:
            raise PeopleError(f"{path}: people[{i}]: expected 'pose_keypoints_2d' or 'pose_keypoints', found none")
        values = p[key]
        if (
            not isinstance(values, list)
            or len(values) % 3
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        ):
            raise PeopleError(
                f"{path}: people[{i}].{key}: expected a flat list of numbers, x y confidence per keypoint "
                f"(75 for BODY_25, 54 for COCO-18), found {_describe(values)}"
            )
        kp = np.asarray(values, np.float64).reshape(-1, 3)
        box = box_from_keypoints(kp, min_confidence)
        if box is None:
            found.skipped.append(
                f"{name} people[{i}]: fewer than {MIN_KEYPOINTS} keypoints with confidence > {min_confidence:g} "
                f"(or all at one point)"
            )
            continue
        found.people.append(Person(box, f"openpose:{name}#{i}", keypoints=kp))
    if not found.people:
        why = f"; skipped: {'; '.join(found.skipped)}" if found.skipped else ""
        raise PeopleError(f"{path}: names no person (expected at least one in 'people'){why}")
    return found


def _describe(v: Any) -> str:
    if isinstance(v, list):
        return f"a list of {len(v)} items"
    return f"{type(v).__name__} {str(v)[:40]!r}"


def _parse_box(item: Any, where: str) -> tuple[tuple[float, float, float, float], float | None]:
    """[x, y, w, h], [x, y, w, h, score] or {'bbox': [...], 'score': s} -> (box, score)."""
    score = None
    if isinstance(item, dict):
        if "bbox" not in item:
            raise PeopleError(f"{where}: expected a 'bbox' entry, found keys {sorted(item)}")
        score = item.get("score")
        item = item["bbox"]
    ok = isinstance(item, list) and len(item) in (4, 5)
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in item)
    if ok and len(item) == 5:
        item, score = item[:4], item[4]
    if ok and score is not None and not (isinstance(score, (int, float)) and math.isfinite(score)):
        ok = False
    if not ok or not all(math.isfinite(v) for v in item) or item[2] <= 0 or item[3] <= 0:
        raise PeopleError(
            f"{where}: expected a box [x, y, w, h] (w, h > 0; optionally a 5th number, the score, or "
            f"{{'bbox': [...], 'score': s}}), found {json.dumps(item)[:80]}"
        )
    return tuple(float(v) for v in item), (None if score is None else float(score))


class BoxesFile:
    """A boxes / detections JSON file (see the module docstring), read once; `find(image)` looks up
    one image's people."""

    def __init__(self, path: str, min_score: float = DEFAULT_MIN_SCORE):
        self.path, self.min_score = path, min_score
        data = _load_json(path)
        self.single = None  # SPIN's {'bbox': ...}: every image
        self.by_key: dict[str, list[tuple[tuple, float | None, str]]] = {}
        name = os.path.basename(path)
        if isinstance(data, dict) and "bbox" in data and not isinstance(data["bbox"], dict):
            self.single = [(*_parse_box(data, f"{path}: 'bbox'"), f"boxes:{name}")]
        elif isinstance(data, dict):
            for key, items in data.items():
                if not isinstance(items, list):
                    raise PeopleError(f"{path}: [{key!r}]: expected a list of boxes, found {_describe(items)}")
                if items and isinstance(items[0], (int, float)):  # one bare box
                    items = [items]
                self.by_key[str(key)] = [
                    (*_parse_box(b, f"{path}: [{key!r}][{j}]"), f"boxes:{name}[{key}]#{j}") for j, b in enumerate(items)
                ]
        elif isinstance(data, list) and data and all(isinstance(b, list) for b in data):  # boxes: every image
            self.single = [(*_parse_box(b, f"{path}: [{j}]"), f"boxes:{name}#{j}") for j, b in enumerate(data)]
        elif isinstance(data, list):  # COCO-style detection results
            for j, d in enumerate(data):
                if not isinstance(d, dict) or not ("image_id" in d or "file_name" in d):
                    raise PeopleError(
                        f"{path}: [{j}]: expected a detection {{'image_id' or 'file_name', 'bbox', 'score', "
                        f"'category_id'}}, found {json.dumps(d)[:80]}"
                    )
                if "category_id" in d and d["category_id"] != PERSON_CATEGORY_ID:
                    continue
                key = str(d["file_name"]) if "file_name" in d else _id_key(d["image_id"])
                self.by_key.setdefault(key, []).append((*_parse_box(d, f"{path}: [{j}]"), f"boxes:{name}#{j}"))
        else:
            raise PeopleError(
                f"{path}: expected boxes JSON (an object of image name -> boxes, a list of COCO-style "
                f"detections, or {{'bbox': [x, y, w, h]}}), found {type(data).__name__}"
            )

    def find(self, image_path: str) -> Found:
        base = os.path.basename(image_path)
        stem = os.path.splitext(base)[0]
        if self.single is not None:
            entries = self.single
        else:
            keys = dict.fromkeys((image_path, os.path.abspath(image_path), base, stem, _id_key(stem)))
            entries = [e for k in keys if k in self.by_key for e in self.by_key[k]]
            if not entries:
                raise PeopleError(f"{self.path}: names no person for {base} (no entry {base!r} or {stem!r})")
        found = Found([])
        for box, score, source in entries:
            if score is not None and score < self.min_score:
                found.skipped.append(f"{source}: score {score:g} < --min-score {self.min_score:g}")
                continue
            found.people.append(Person(box, source, score=score))
        if not found.people:
            raise PeopleError(
                f"{self.path}: names no person for {base} with score >= --min-score {self.min_score:g} "
                f"({len(found.skipped)} below it)"
            )
        return found


def _id_key(image_id: Any) -> str:
    """COCO image ids and digit stems compared as numbers: 397133 == '000000397133'."""
    s = str(image_id)
    return f"#id{int(s)}" if s.isdigit() else s


def _per_image_file(folder: str, image_path: str, suffixes: Sequence[str], flag: str) -> str:
    stem = os.path.splitext(os.path.basename(image_path))[0]
    for suffix in suffixes:
        p = os.path.join(folder, stem + suffix)
        if os.path.isfile(p):
            return p
    tried = ", ".join(stem + s for s in suffixes)
    raise PeopleError(f"{flag} {folder}: no file for {os.path.basename(image_path)} (looked for {tried})")


class PeopleFinder:
    """Boxes per image from `--keypoints` (file or folder), `--boxes` (file or folder), or nothing
    (None: the whole image). `find(image_path)` -> `Found`, or raises `PeopleError`."""

    def __init__(
        self,
        keypoints: str | None = None,
        boxes: str | None = None,
        min_score: float = DEFAULT_MIN_SCORE,
        min_confidence: float = MIN_KEYPOINT_CONFIDENCE,
    ):
        if keypoints and boxes:
            raise ValueError("--keypoints and --boxes: expected one of them, found both")
        for flag, p in (("--keypoints", keypoints), ("--boxes", boxes)):
            if p and not os.path.exists(p):
                raise ValueError(f"{flag} {p}: no such file or folder")
        if not math.isfinite(min_score):
            raise ValueError(f"--min-score: expected a number, found {min_score}")
        self.keypoints, self.boxes, self.min_score, self.min_confidence = keypoints, boxes, min_score, min_confidence
        self._boxes_file = BoxesFile(boxes, min_score) if boxes and os.path.isfile(boxes) else None

    @property
    def active(self) -> bool:
        return bool(self.keypoints or self.boxes)

    def find(self, image_path: str) -> Found:
        if self.keypoints:
            path = self.keypoints
            if os.path.isdir(path):
                path = _per_image_file(path, image_path, KEYPOINT_SUFFIXES, "--keypoints")
            return read_openpose(path, self.min_confidence)
        if self._boxes_file is not None:
            return self._boxes_file.find(image_path)
        path = _per_image_file(self.boxes, image_path, BOX_SUFFIXES, "--boxes")
        return BoxesFile(path, self.min_score).find(image_path)
