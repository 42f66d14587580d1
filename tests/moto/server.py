"""moto_server with one fidelity fix for SQS FIFO deduplication (started by moto.sh).

SQS drops a FIFO message whose MessageDeduplicationId was accepted in the last 5 minutes, even
if that first message has been deleted since ("accepted successfully but not delivered during
the 5-minute deduplication interval"). moto 5 only compares against messages still in the queue,
so a Graph notification redelivered after its job was processed would run twice there, and the
queue conformance suite (which checks exactly this) would fail against moto but not AWS.
The fix remembers each accepted deduplication id per queue for the interval.
"""

import sys

import moto.sqs.models as sqs_models
from moto.server import main

_original_add_message = sqs_models.Queue.add_message


def _add_message(self, message):
    if self.fifo_queue and message.deduplication_id:
        seen = self.__dict__.setdefault("_shadowsync_dedup_seen", {})
        now = message.sent_timestamp
        window_ms = sqs_models.DEDUPLICATION_TIME_IN_SECONDS * 1000
        first = seen.get(message.deduplication_id)
        if first is not None and now - first < window_ms:
            return
        # Forget expired ids so the map stays as small as the 5-minute traffic.
        for dedup_id in [d for d, t in seen.items() if now - t >= window_ms]:
            del seen[dedup_id]
        seen[message.deduplication_id] = now
    _original_add_message(self, message)


sqs_models.Queue.add_message = _add_message

if __name__ == "__main__":
    main(sys.argv[1:])
