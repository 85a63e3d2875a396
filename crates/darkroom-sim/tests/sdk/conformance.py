"""Drives the simulator with the official `lumaai` Python SDK: every response must parse into the
SDK's own types, and the SDK's errors must be the ones its users would see from Luma.

Usage: python conformance.py BASE_URL   (the simulator started with --api-key sdk-test-key
--rate-per-minute 1000 --max-concurrent 3)
"""

import struct
import sys
import time
import urllib.request

import lumaai
from lumaai import LumaAI

BASE_URL = sys.argv[1]
client = LumaAI(auth_token="sdk-test-key", base_url=BASE_URL, max_retries=0)


def image_size(data: bytes):
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return struct.unpack(">II", data[16:24])
    i = 2
    while i < len(data):
        marker = data[i + 1]
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker == 0xC0:
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        i += 2 + length
    raise AssertionError("no SOF0 marker")


def wait(generation_id):
    for _ in range(400):
        generation = client.generations.get(generation_id)
        assert isinstance(generation, lumaai.types.Generation)
        if generation.state in ("completed", "failed"):
            return generation
        time.sleep(0.05)
    raise AssertionError(f"{generation_id} never finished")


checks = 0

# Both models, several aspect ratios and formats, with references.
cases = [
    dict(model="photon-flash-1", aspect_ratio="16:9", expected=(2048, 1152)),
    dict(model="photon-1", aspect_ratio="1:1", format="png", expected=(1536, 1536)),
    dict(
        model="photon-flash-1",
        aspect_ratio="9:16",
        expected=(1152, 2048),
        image_ref=[{"url": "https://cdn.example.com/a.jpg", "weight": 0.85}],
        style_ref=[{"url": "https://cdn.example.com/s.jpg", "weight": 0.6}],
        character_ref={"identity0": {"images": ["https://cdn.example.com/p.jpg"]}},
        modify_image_ref={"url": "https://cdn.example.com/m.jpg", "weight": 0.1},
    ),
]
ids = []
for case in cases:
    expected = case.pop("expected")
    created = client.generations.image.create(prompt="A linen sofa by a tall window", **case)
    assert isinstance(created, lumaai.types.Generation), type(created)
    assert created.state == "queued", created.state
    assert created.generation_type == "image"
    assert created.assets is not None and created.assets.image is None
    assert created.request is not None
    done = wait(created.id)
    assert done.state == "completed", done.failure_reason
    with urllib.request.urlopen(done.assets.image) as response:
        body = response.read()
    assert image_size(body) == expected, (image_size(body), expected)
    ids.append(created.id)
    checks += 1

listed = client.generations.list(limit=2, offset=0)
assert [g.id for g in listed.generations] == [ids[2], ids[1]], "newest first"
assert listed.has_more is True and listed.count == 2 and listed.limit == 2 and listed.offset == 0
checks += 1

client.generations.delete(ids[0])
try:
    client.generations.get(ids[0])
    raise AssertionError("a deleted generation is gone")
except lumaai.NotFoundError:
    checks += 1

credits = client.credits.get()
assert abs(credits.credit_balance - (10000 - 0.4 - 1.5 - 0.4)) < 1e-6, credits.credit_balance
checks += 1

try:
    LumaAI(auth_token="a-wrong-key", base_url=BASE_URL, max_retries=0).ping.check()
    raise AssertionError("a wrong key is refused")
except lumaai.AuthenticationError as error:
    assert error.status_code == 401
    assert error.body == {"detail": "Invalid API key is provided"}, error.body
    checks += 1

try:
    client.generations.image.create(model="photon-1", prompt="A sofa", aspect_ratio="5:4")
    raise AssertionError("a bad aspect ratio is refused")
except lumaai.UnprocessableEntityError as error:
    assert error.status_code == 422
    assert error.body["detail"][0]["loc"] == ["body", "aspect_ratio"], error.body
    checks += 1

try:
    client.generations.image.create(model="photon-1", prompt="ab")
    raise AssertionError("a short prompt is refused")
except lumaai.BadRequestError as error:
    assert "too short" in str(error)
    checks += 1

# Over the concurrency limit (3): the fourth at once is a 429.
for _ in range(3):
    client.generations.image.create(model="photon-1", prompt="A slow photon-1 image")
try:
    client.generations.image.create(model="photon-1", prompt="One too many")
    raise AssertionError("over the limit")
except lumaai.RateLimitError as error:
    assert error.status_code == 429
    assert error.response.headers.get("retry-after") is not None
    checks += 1

assert client.ping.check() is not None
print(f"{checks + 1} passed, 0 failed")
