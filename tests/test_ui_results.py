"""The batch page's plain functions: result rows, the uncertain mark, the chart's counts, the CSV and
JSON exports, a folder's files split into photos and skipped ones, photos grouped into requests."""

from __future__ import annotations

import csv
import hashlib
import io
import json

from ui.batch import Progress, chunks
from ui.export import csv_columns, to_csv, to_json
from ui.logic import Outcome
from ui.results import (
    OTHER,
    classified_count,
    label_counts,
    photo_digest,
    plain_error,
    result_rows,
    table_records,
    uncertain_rows,
)
from ui.sources import camera_name, is_image_name, split_folder

MODEL = {"name": "resnet18", "version": "1.0", "runtime": "torchscript", "precision": "fp32", "weights": "w"}


def answered(name: str, *ranked: tuple[str, float]) -> Outcome:
    """An outcome as the server's answer makes it (highest first)."""
    return Outcome(name, [{"label": label, "index": i, "probability": p} for i, (label, p) in enumerate(ranked)], MODEL)


PHOTOS = [
    ("trip/day 1/cat.jpg", b"cat bytes"),
    ("trip/été/chien.png", b"dog bytes"),
    ("trip/notes.jpg", b"not a photo"),
    ("trip/owl.webp", b"owl bytes"),
    ("trip/later.jpg", b"not answered yet"),
]
OUTCOMES = [
    answered("trip/day 1/cat.jpg", ("tabby", 0.7), ("tiger cat", 0.2), ("Egyptian cat", 0.05)),
    answered("trip/été/chien.png", ("Bouvier des Flandres", 0.31), ("briard", 0.3), ("komondor", 0.01)),
    Outcome("trip/notes.jpg", error="**trip/notes.jpg** is not an image this server can read."),
    answered("trip/owl.webp", ("great grey owl", 0.5), ("kite", 0.1), ("tabby", 0.0001)),
    None,
]


def rows():
    return result_rows(PHOTOS, OUTCOMES, [photo_digest(data) for _, data in PHOTOS])


def test_rows_keep_upload_order_names_hashes_and_the_answer():
    found = rows()
    assert [r.file for r in found] == [name for name, _ in PHOTOS]
    assert [r.position for r in found] == list(range(len(PHOTOS)))
    assert found[1].sha256 == hashlib.sha256(b"dog bytes").hexdigest()
    assert found[0].labels == ["tabby", "tiger cat", "Egyptian cat"] and found[0].probabilities == [0.7, 0.2, 0.05]
    assert (found[0].model, found[0].version, found[0].runtime, found[0].precision) == (
        "resnet18",
        "1.0",
        "torchscript",
        "fp32",
    )
    assert found[2].error == "trip/notes.jpg is not an image this server can read." and not found[2].labels
    assert found[4].labels == [] and found[4].error is None and found[4].model is None
    assert classified_count(found) == 3


def test_uncertain_is_below_the_threshold_and_never_a_failure():
    found = rows()
    assert [r.file for r in uncertain_rows(found, 0.5)] == ["trip/été/chien.png"]  # 0.5 itself is not below
    assert [r.file for r in uncertain_rows(found, 0.51)] == ["trip/été/chien.png", "trip/owl.webp"]
    assert [r.file for r in uncertain_rows(found, 1.0)] == ["trip/day 1/cat.jpg", "trip/été/chien.png", "trip/owl.webp"]
    assert uncertain_rows(found, 0.0) == []


def test_table_records_show_top_label_probability_and_the_others():
    record = table_records(rows(), 0.5)[0]
    assert record == {
        "#": 1,
        "file": "trip/day 1/cat.jpg",
        "top label": "tabby",
        "probability": 0.7,
        "other labels": "tiger cat 20.0%, Egyptian cat 5.0%",
        "uncertain": False,
        "error": "",
    }
    assert table_records(rows(), 0.5)[2]["error"].startswith("trip/notes.jpg is not an image")


def test_label_counts_most_frequent_first_and_the_rest_summed():
    found = rows()
    assert label_counts(found) == [("Bouvier des Flandres", 1), ("great grey owl", 1), ("tabby", 1)]
    many = result_rows(
        [(f"{i}.jpg", bytes([i])) for i in range(7)],
        [answered(f"{i}.jpg", (label, 0.9)) for i, label in enumerate("aabbbcd")],
        [f"digest {i}" for i in range(7)],
    )
    assert label_counts(many, most=3) == [("b", 3), ("a", 2), (OTHER, 2)]
    assert label_counts(many, most=4) == [("b", 3), ("a", 2), ("c", 1), ("d", 1)]


def test_csv_is_utf8_one_row_per_photo_in_order_with_numbers_as_numbers():
    data = to_csv(rows(), 0.5)
    text = data.decode("utf-8")  # strict: fails on anything but UTF-8
    assert not text.startswith("\ufeff")
    table = list(csv.reader(io.StringIO(text)))
    assert table[0] == csv_columns(3)
    body = [dict(zip(table[0], line, strict=True)) for line in table[1:]]
    assert [r["file"] for r in body] == [name for name, _ in PHOTOS]
    assert body[1]["file"] == "trip/été/chien.png"
    assert float(body[0]["probability_1"]) == 0.7 and body[0]["probability_1"] == "0.7"  # not "70.0%"
    assert float(body[3]["probability_3"]) == 0.0001
    assert body[0]["label_2"] == "tiger cat" and body[0]["sha256"] == hashlib.sha256(b"cat bytes").hexdigest()
    assert (body[0]["model"], body[0]["version"], body[0]["runtime"], body[0]["precision"]) == (
        "resnet18",
        "1.0",
        "torchscript",
        "fp32",
    )
    assert body[0]["uncertain"] == "false" and body[1]["uncertain"] == "true"
    assert body[2]["label_1"] == "" and body[2]["probability_1"] == "" and "not an image" in body[2]["error"]
    assert body[4]["error"] == "" and body[4]["uncertain"] == ""


def test_json_holds_the_same_facts_with_numbers_and_nulls():
    answer = json.loads(to_json(rows(), 0.5).decode("utf-8"))
    assert answer["threshold"] == 0.5
    photos = answer["photos"]
    assert [p["file"] for p in photos] == [name for name, _ in PHOTOS]
    assert photos[0]["predictions"][0] == {"label": "tabby", "probability": 0.7}
    assert photos[0]["model"] == {"model": "resnet18", "version": "1.0", "runtime": "torchscript", "precision": "fp32"}
    assert photos[1]["uncertain"] is True and photos[0]["uncertain"] is False
    assert photos[2]["predictions"] == [] and photos[2]["uncertain"] is None and "not an image" in photos[2]["error"]
    assert "été" in to_json(rows(), 0.5).decode("utf-8")  # UTF-8 itself, not \u escapes


def test_empty_export_has_a_header_only():
    assert to_csv([], 0.5).decode() == "file,sha256,model,version,runtime,precision,uncertain,error\n"
    assert json.loads(to_json([], 0.5)) == {"threshold": 0.5, "photos": []}


def test_plain_error_drops_markdown():
    assert plain_error("The server has no model named `x`: **a.jpg**") == "The server has no model named x: a.jpg"


def test_folder_files_split_into_photos_and_skipped_ones():
    files = [
        ("f/a.JPG", b"1"),
        ("f/.DS_Store", b"2"),
        ("f/sub/b.webp", b"3"),
        ("f/notes.txt", b"4"),
        ("f/sub/._c.jpg", b"5"),
        ("f/movie.mov", b"6"),
        ("f/sub/deeper/d.heic", b"7"),
        ("f/README", b"8"),
    ]
    picked = split_folder(files)
    assert picked.photos == [("f/a.JPG", b"1"), ("f/sub/b.webp", b"3"), ("f/sub/deeper/d.heic", b"7")]
    assert picked.skipped == ["f/.DS_Store", "f/movie.mov", "f/notes.txt", "f/README", "f/sub/._c.jpg"]
    numbered = split_folder([("f/photo 10.jpg", b""), ("f/Photo 9.jpg", b""), ("f/photo 1.png", b"")])
    assert [name for name, _ in numbered.photos] == ["f/photo 1.png", "f/Photo 9.jpg", "f/photo 10.jpg"]
    assert is_image_name("x.png") and is_image_name("x.tiff") and not is_image_name("x.pdf")


def test_camera_pictures_get_names_of_their_own():
    assert camera_name(b"one").endswith(".jpg") and camera_name(b"one") != camera_name(b"two")
    assert camera_name(b"one") == camera_name(b"one")


def test_chunks_by_count_and_by_bytes_in_order():
    assert chunks([1] * 20, 8) == [list(range(8)), list(range(8, 16)), list(range(16, 20))]
    assert chunks([1] * 3, 1) == [[0], [1], [2]]
    assert chunks([], 8) == []
    assert chunks([4, 4, 4, 10, 1], 8, max_bytes=9) == [[0, 1], [2], [3], [4]]  # a big one goes alone


def test_progress_rate_and_text():
    progress = Progress(40, 120, 4.0)
    assert progress.rate == 10.0 and progress.text() == "Classifying… 40/120 photos done · 10.0 photos/s"
    assert Progress(0, 5, 0.0).rate == 0.0
