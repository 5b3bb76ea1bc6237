"""A gRPC door: HTTP/2 (h2c, as TorchServe's gRPC is served) that spools each message to disk first.

Like the front's HTTP doors, and unlike a gRPC library (which holds every message whole in memory
before the call starts), the door keeps at most `buffer_bytes` of a message in memory and the rest in
a spool file, answers a message over `max_bytes` with RESOURCE_EXHAUSTED as soon as it passes the
limit, and admits whole messages by size class (`classes`, as the front's body classes): at most so
many of each size are read into memory and handled at once, the rest are refused at once with
RESOURCE_EXHAUSTED. A client that stops sending mid-call is dropped after `idle_s`.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions

from service.doors.gateway.calls import Call, Method, Refused, status_headers

log = logging.getLogger("gateway")
GRPC_HEADER = struct.Struct(">?I")  # compressed flag, message length
BUSY = "the server is busy with other calls of this size: retry shortly"


@dataclass(frozen=True)
class SizeClass:
    max_bytes: int
    calls: int  # handled at once
    receiving: int | None = None  # received (spooled) at once; None: unbounded but by connections


@dataclass
class Stream:
    headers: list[tuple[str, str]]
    spool: tempfile.SpooledTemporaryFile
    received: int = 0
    done: bool = False  # answered (or refused) already: further data is read and dropped
    receiving_class: int = -1  # the size class it holds a receiving place in (-1: none)
    handed: bool = False  # its spool belongs to the call answering it, which closes it
    pending: bytes = b""  # answer bytes waiting for the client's flow-control window
    trailers: list[tuple[str, str]] = field(default_factory=list)


class Admission:
    """Calls in hand by size class; a call that finds its class full is refused, never queued. Also
    the messages being received by size class so far (the event loop's thread only), so that a burst
    cannot fill the spool's disk: a message that grows into a full class is refused at once."""

    def __init__(self, classes: tuple[SizeClass, ...]) -> None:
        self.classes = sorted(classes, key=lambda c: c.max_bytes)
        self.slots = {c.max_bytes: threading.BoundedSemaphore(c.calls) for c in self.classes}
        self.receiving = [0] * len(self.classes)

    def class_of(self, size: int) -> int:
        return next((i for i, c in enumerate(self.classes) if size <= c.max_bytes), len(self.classes) - 1)

    def take(self, size: int) -> threading.BoundedSemaphore | None:
        slot = self.slots[self.classes[self.class_of(size)].max_bytes]
        return slot if slot.acquire(blocking=False) else None

    def receive(self, stream: Stream) -> bool:
        """Move the stream to the receiving place of the class its size has reached; False if full."""
        index = self.class_of(stream.received)
        if index == stream.receiving_class:
            return True
        self.done_receiving(stream)
        limit = self.classes[index].receiving
        if limit is not None and self.receiving[index] >= limit:
            return False
        self.receiving[index] += 1
        stream.receiving_class = index
        return True

    def done_receiving(self, stream: Stream) -> None:
        if stream.receiving_class >= 0:
            self.receiving[stream.receiving_class] -= 1
            stream.receiving_class = -1


class GrpcDoor(asyncio.Protocol):
    """One client connection of a door (`Door` holds what all of its connections share)."""

    def __init__(self, door: Door) -> None:
        self.door = door
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.streams: dict[int, Stream] = {}
        self.transport: asyncio.Transport | None = None
        self.idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.conn.initiate_connection()
        self.flush()
        self.rearm()

    def connection_lost(self, exc: Exception | None) -> None:
        for stream_id in list(self.streams):
            self.forget(stream_id)
        if self.idle:
            self.idle.cancel()

    def rearm(self) -> None:
        """Drop a connection that sends nothing for idle_s while a call is still being received."""
        if self.idle:
            self.idle.cancel()
        self.idle = asyncio.get_running_loop().call_later(self.door.idle_s, self.idle_check)

    def idle_check(self) -> None:
        if any(not s.done for s in self.streams.values()) and self.transport:
            self.transport.close()
        else:
            self.rearm()

    def flush(self) -> None:
        if self.transport and not self.transport.is_closing():
            self.transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        self.rearm()
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.flush()
            if self.transport:
                self.transport.close()
            return
        for event in events:
            self.on_event(event)
        self.flush()

    def on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self.streams[event.stream_id] = Stream(list(event.headers), self.door.spool())
        elif isinstance(event, h2.events.DataReceived):
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            self.on_data(event.stream_id, event.data)
        elif isinstance(event, h2.events.StreamEnded):
            self.on_end(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.pop(event.stream_id, None)
            if stream:
                stream.spool.close()
        elif isinstance(event, h2.events.WindowUpdated):
            for stream_id in list(self.streams):
                self.send_pending(stream_id)

    def on_data(self, stream_id: int, data: bytes) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or stream.done:
            return
        stream.received += len(data)
        if stream.received > self.door.max_bytes + GRPC_HEADER.size:
            self.refuse(stream_id, Refused(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                           f"the request message is over {self.door.max_bytes} bytes "
                                           f"({self.door.max_bytes / 2**20:g} MiB): send a smaller one"))
            return
        if not self.door.admission.receive(stream):
            self.refuse(stream_id, Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, BUSY))
            return
        stream.spool.write(data)

    def on_end(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or stream.done:
            self.forget(stream_id)
            return
        stream.done = True
        self.door.admission.done_receiving(stream)
        slot = self.door.admission.take(stream.received)
        if slot is None:
            self.refuse(stream_id, Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, BUSY))
            return
        stream.handed = True
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.door.pool, self.door.answer, stream, slot)
        future.add_done_callback(lambda f: self.answered(stream_id, f.result()))

    def answered(self, stream_id: int, answer: tuple[bytes | None, list[tuple[str, str]]]) -> None:
        message, trailers = answer
        if stream_id not in self.streams or self.transport is None or self.transport.is_closing():
            self.forget(stream_id)
            return
        try:
            if message is None:  # trailers only
                self.conn.send_headers(stream_id, [(":status", "200"), ("content-type", "application/grpc"),
                                                   *trailers], end_stream=True)
                self.forget(stream_id)
            else:
                self.conn.send_headers(stream_id, [(":status", "200"), ("content-type", "application/grpc")])
                stream = self.streams[stream_id]
                stream.pending, stream.trailers = GRPC_HEADER.pack(False, len(message)) + message, trailers
                self.send_pending(stream_id)
        except h2.exceptions.H2Error:
            self.forget(stream_id)
        self.flush()

    def send_pending(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or not stream.trailers:
            return
        try:
            while stream.pending:
                window = min(self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
                if window <= 0:
                    return
                chunk, stream.pending = stream.pending[:window], stream.pending[window:]
                self.conn.send_data(stream_id, chunk)
            self.conn.send_headers(stream_id, stream.trailers, end_stream=True)
        except h2.exceptions.H2Error:
            pass
        self.forget(stream_id)
        self.flush()

    def refuse(self, stream_id: int, refused: Refused) -> None:
        """Trailers-only answer now, and stop the client sending the rest of the message."""
        stream = self.streams[stream_id]
        stream.done = True
        self.conn.send_headers(stream_id, [(":status", "200"), ("content-type", "application/grpc"),
                                           *status_headers(refused.code, refused.details)], end_stream=True)
        try:
            self.conn.reset_stream(stream_id, h2.errors.ErrorCodes.NO_ERROR)
        except h2.exceptions.H2Error:
            pass
        self.forget(stream_id)

    def forget(self, stream_id: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream:
            self.door.admission.done_receiving(stream)
            if not stream.handed:
                stream.spool.close()


class Door:
    """What every connection of one gRPC door shares: its methods, limits, admission and threads."""

    def __init__(self, methods: dict[str, Method], max_bytes: int, classes: tuple[SizeClass, ...],
                 spool_dir: Path, buffer_bytes: int, idle_s: float) -> None:
        self.methods, self.max_bytes, self.idle_s = methods, max_bytes, idle_s
        self.admission = Admission(classes)
        self.spool_dir, self.buffer_bytes = Path(spool_dir), buffer_bytes
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.pool = ThreadPoolExecutor(max_workers=sum(c.calls for c in classes), thread_name_prefix="door")

    def spool(self) -> tempfile.SpooledTemporaryFile:
        return tempfile.SpooledTemporaryFile(max_size=self.buffer_bytes, dir=self.spool_dir)

    def answer(self, stream: Stream, slot: threading.BoundedSemaphore) -> tuple[bytes | None, list[tuple[str, str]]]:
        """(response message, trailers), or (None, status trailers) for a refusal. Runs in a thread."""
        try:
            return self.call(stream)
        except Refused as refused:
            return None, status_headers(refused.code, refused.details)
        except Exception as error:  # a bug here must answer the call, not leave it hanging
            log.exception("gRPC call failed")
            return None, status_headers(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")
        finally:
            slot.release()
            stream.spool.close()

    def call(self, stream: Stream) -> tuple[bytes, list[tuple[str, str]]]:
        headers = dict(stream.headers)
        method = self.methods.get(headers.get(":path", ""))
        if method is None:
            raise Refused(grpc.StatusCode.UNIMPLEMENTED, f"no method {headers.get(':path')} here")
        stream.spool.seek(0)
        compressed, length = GRPC_HEADER.unpack(stream.spool.read(GRPC_HEADER.size) or b"\0\0\0\0\0")
        if compressed:
            raise Refused(grpc.StatusCode.UNIMPLEMENTED, "compressed messages are not supported: send them plain")
        request = method.request.FromString(stream.spool.read(length))
        response = method.function(request, Call(stream.headers))
        return response.SerializeToString(), status_headers(grpc.StatusCode.OK)


async def serve(door: Door, host: str, port: int) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: GrpcDoor(door), host, port, reuse_address=True)
