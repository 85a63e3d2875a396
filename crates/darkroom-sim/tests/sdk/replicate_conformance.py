"""Drives the simulator's Replicate API with the official `replicate` Python client: every answer
must parse into the client's own types, its polling and `run()` must finish, outputs must download,
the list must page, cancel must cancel, errors must be the client's `ReplicateError` with
Replicate's fields, and a webhook the simulator delivers must pass the client's own signature check
(`replicate.webhook.Webhooks.validate`) under the secret the client reads.

Usage: python replicate_conformance.py ROOT   (ROOT: the simulator's origin + "/replicate"; token
sdk-test-key)
"""

import http.server
import json
import queue
import sys
import threading

from replicate.client import Client
from replicate.exceptions import ReplicateError
from replicate.pagination import paginate
from replicate.prediction import Prediction
from replicate.webhook import Webhooks, WebhookValidationError

ROOT = sys.argv[1]
client = Client(api_token="sdk-test-key", base_url=ROOT)
checks = 0


def check(condition, message):
    global checks
    assert condition, message
    checks += 1


def jpeg_size(data: bytes):
    i = 2
    while i < len(data):
        marker = data[i + 1]
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker == 0xC0:
            return int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(data[i + 5 : i + 7], "big")
        i += 2 + length
    raise AssertionError("no SOF0 marker")


# Create on an official model (by owner/name), poll to the end, download the output.
prediction = client.models.predictions.create(
    model="luma/photon-flash",
    input={"prompt": "A teak chair on a terrace", "aspect_ratio": "16:9"},
)
check(isinstance(prediction, Prediction), f"create returned {type(prediction)}")
check(prediction.status in ("starting", "processing"), prediction.status)
check(prediction.urls and prediction.urls.get("get", "").endswith(prediction.id), prediction.urls)
client.poll_interval = 0.05
prediction.wait()
check(prediction.status == "succeeded", f"{prediction.status}: {prediction.error}")
check(isinstance(prediction.output, str) and prediction.output.startswith("http"), prediction.output)
image = client._client.get(prediction.output).content
check(jpeg_size(image) == (2048, 1152), jpeg_size(image))
read = client.predictions.get(prediction.id)
check(read.id == prediction.id and read.status == "succeeded", read)
check(read.input.get("prompt") == "A teak chair on a terrace", read.input)

# run(): the client's one-call path (Prefer: wait, then polling), its output as a file.
output = client.run("luma/photon", input={"prompt": "A brass lamp", "aspect_ratio": "1:1"})
data = output.read() if hasattr(output, "read") else client._client.get(str(output)).content
check(jpeg_size(data) == (1536, 1536), jpeg_size(data))

# The list, newest first, paged by its cursor.
for i in range(3):
    client.models.predictions.create(model="luma/photon-flash", input={"prompt": f"A stool {i}"})
page = client.predictions.list()
check(len(page.results) >= 5, len(page.results))
check(all(isinstance(p, Prediction) for p in page.results), page.results)
check(page.results[0].input.get("prompt") == "A stool 2", page.results[0].input)
ids = [p.id for page in paginate(client.predictions.list) for p in page.results]
check(prediction.id in ids and len(ids) == len(set(ids)), ids)

# Cancel a prediction still running: it ends canceled, with no output.
running = client.models.predictions.create(
    model="luma/photon", input={"prompt": "A walnut desk", "aspect_ratio": "4:3"}
)
canceled = client.predictions.cancel(running.id)
check(canceled.status == "canceled", canceled.status)
running.reload()
check(running.status == "canceled" and running.output is None, (running.status, running.output))
running.wait()  # returns at once: canceled is an end
check(running.status == "canceled", running.status)

# Errors: Replicate's problem details, as the client's ReplicateError.
for call, status in [
    (lambda: client.predictions.get("no-such-prediction"), 404),
    (lambda: client.models.predictions.create(model="luma/photon", input={"aspect_ratio": "5:4"}), 422),
    (lambda: Client(api_token="wrong", base_url=ROOT).predictions.get(prediction.id), 401),
]:
    try:
        call()
        raise AssertionError(f"no error where {status} was expected")
    except ReplicateError as error:
        check(error.status == status, (error.status, error.title, error.detail))
        check(bool(error.detail), error)

# A webhook: delivered signed, and the client's own check accepts it under the account's secret.
deliveries = queue.Queue()


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        deliveries.put((dict(self.headers), body.decode()))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
threading.Thread(target=server.serve_forever, daemon=True).start()
hooked = client.models.predictions.create(
    model="luma/photon-flash",
    input={"prompt": "A cane chair"},
    webhook=f"http://127.0.0.1:{server.server_address[1]}/hook",
    webhook_events_filter=["completed"],
)
headers, body = deliveries.get(timeout=30)
server.shutdown()
delivered = json.loads(body)
check(delivered["id"] == hooked.id and delivered["status"] == "succeeded", delivered)
secret = client.webhooks.default.secret()
check(secret.key.startswith("whsec_"), secret.key[:6])
check(Webhooks.validate(headers=headers, body=body, secret=secret, tolerance=300) is not False, headers)
try:
    Webhooks.validate(headers=headers, body=body.replace("succeeded", "failed"), secret=secret)
    raise AssertionError("a tampered delivery validated")
except WebhookValidationError:
    checks += 1

print(f"{checks} passed, 0 failed")
