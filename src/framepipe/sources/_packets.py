"""The camera's own encoded video, kept for a while: what event clips are cut from.

A source whose video is H.264 or H.265 (``VideoFile``, ``Stream``) keeps, when
a ``Clips`` sink needs it, a bounded ring of the packets it demuxed: the last
``keep`` seconds, reaching back to a keyframe. A clip is those packets muxed
into an MP4 by stream copy, so it costs no encoder time and keeps the camera's
quality. Packets are kept in Annex B form (start codes, parameter sets before
each keyframe), which every container takes; an MP4 muxer turns them back into
its own form.

The ring lives in the source's host; the placement keeps every ``Clips`` sink
in the same process as the sources it cuts from, so packets never cross a
process boundary at all.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from itertools import islice
from typing import Any

#: Codecs a clip is cut from by stream copy, by FFmpeg codec name.
COPIED_CODECS = {"h264": "h264_mp4toannexb", "hevc": "hevc_mp4toannexb"}


@dataclass(frozen=True, slots=True)
class VideoFormat:
    """What a muxer needs to know of a connection's video."""

    codec: str
    width: int
    height: int
    time_base: Fraction
    rate: Fraction | None


@dataclass(frozen=True, slots=True)
class EncodedPacket:
    """One demuxed packet. ``pts``/``dts``/``duration`` count ``time_base`` units of the
    input; ``at`` is its presentation time on the pipeline's clock (``frame.pts``)."""

    data: bytes
    pts: int
    dts: int
    duration: int
    key: bool
    at: float
    #: Which connection it came from: a reconnect starts a new segment.
    segment: int
    format: VideoFormat


class PacketRing:
    """The packets of one source's last ``keep`` seconds, written by the source's reader
    and read by ``Clips`` sinks in the same process (a lock between them)."""

    def __init__(self, source: str, keep: float) -> None:
        self.source = source
        self.keep = keep
        self._packets: deque[EncodedPacket] = deque()
        self._keys: deque[EncodedPacket] = deque()  # the keyframes among them, oldest first
        self._lock = threading.Lock()
        self.bytes = 0
        self.segment = 0
        self.added = 0  # packets added since the start, so readers can resume
        #: Set by a source whose video cannot be stream-copied: its codec's name.
        self.uncopyable: str | None = None

    def add(self, packet: EncodedPacket) -> None:
        with self._lock:
            self._packets.append(packet)
            if packet.key:
                self._keys.append(packet)
            self.bytes += len(packet.data)
            self.added += 1
            self._trim(packet.at - self.keep)

    def _trim(self, oldest: float) -> None:
        # Drop whole GOPs older than ``oldest``: the ring always starts on a keyframe.
        keys, packets = self._keys, self._packets
        if not keys:  # no keyframe yet: what came before one can start no clip
            while packets and packets[0].at < oldest:
                self.bytes -= len(packets.popleft().data)
            return
        if len(keys) < 2 or keys[1].at > oldest:
            return
        while len(keys) > 1 and keys[1].at <= oldest:
            keys.popleft()
        while packets[0] is not keys[0]:
            self.bytes -= len(packets.popleft().data)

    def since(self, number: int) -> tuple[list[EncodedPacket], int]:
        """The packets added after the ``number``-th (0: all kept), and the count so far."""
        with self._lock:
            fresh = min(len(self._packets), self.added - number)
            tail = list(islice(reversed(self._packets), fresh))
            added = self.added
        tail.reverse()
        return tail, added

    def start_for(self, at: float, event: float) -> tuple[list[EncodedPacket], int]:
        """The packets from the last keyframe at or before ``at`` (the oldest kept when
        none is that old) of the connection or loop pass the ``event`` time falls in,
        and the count so far."""
        with self._lock:
            packets = list(self._packets)
            added = self.added
        # A clip never spans a gap: only the event's own connection or pass.
        within = [i for i, packet in enumerate(packets) if packet.at <= event + 1e-6]
        segment = packets[within[-1]].segment if within else packets[0].segment if packets else 0
        keys = [i for i, packet in enumerate(packets) if packet.key and packet.segment == segment]
        if not keys:
            return [], added  # no keyframe yet: nothing a clip can start on
        before = [i for i in keys if packets[i].at <= at + 1e-6]
        return packets[before[-1] if before else keys[0] :], added


class PacketTap:
    """Feeds a ``PacketRing`` from one input's demuxer, in Annex B form.

    ``shift`` turns the input's time into the pipeline's (``frame.pts``): the
    source sets it as it learns it (a loop pass, a stream's timeline).
    """

    def __init__(self, ring: PacketRing, stream: Any) -> None:
        from av.bitstream import BitStreamFilterContext

        codec = stream.codec_context
        self.ring = ring
        self.time_base = Fraction(stream.time_base)
        self.format = VideoFormat(
            codec=codec.name,
            width=int(codec.width),
            height=int(codec.height),
            time_base=self.time_base,
            rate=Fraction(stream.average_rate) if stream.average_rate else None,
        )
        self._filter = BitStreamFilterContext(COPIED_CODECS[codec.name], stream)
        ring.segment += 1
        self.segment = ring.segment
        self.shift: float | None = None
        self._waiting: list[Any] = []  # packets that came before ``shift`` was known

    @staticmethod
    def of(ring: PacketRing | None, stream: Any) -> PacketTap | None:
        """A tap into ``ring`` for this input, when a sink wants one and the video can be
        stream-copied (else the ring says why not)."""
        if ring is None:
            return None
        if stream.codec_context.name not in COPIED_CODECS:
            ring.uncopyable = str(stream.codec_context.name)
            return None
        return PacketTap(ring, stream)

    def add(self, packet: Any) -> None:
        if packet.size == 0 or packet.pts is None or packet.dts is None:
            return
        if self.shift is None:
            self._waiting.append(packet)
            return
        for filtered in self._filter.filter(packet):
            self.ring.add(self._encoded(filtered))

    def next_pass(self, shift: float) -> None:
        """A loop pass begins: its packets are a new segment, placed by ``shift``."""
        self.ring.segment += 1
        self.segment = self.ring.segment
        self.learn(shift)

    def learn(self, shift: float) -> None:
        """The input's time plus ``shift`` is the pipeline's: now packets can be placed."""
        first = self.shift is None
        self.shift = shift
        if first:
            waiting, self._waiting = self._waiting, []
            for packet in waiting:
                self.add(packet)

    def _encoded(self, packet: Any) -> EncodedPacket:
        assert self.shift is not None
        return EncodedPacket(
            data=bytes(packet),
            pts=int(packet.pts),
            dts=int(packet.dts),
            duration=int(packet.duration or 0),
            key=bool(packet.is_keyframe),
            at=float(packet.pts * self.time_base) + self.shift,
            segment=self.segment,
            format=self.format,
        )


#: How often an encoded source's video gets a keyframe: a clip starts on one, so at
#: most this long before its ``pre``.
ENCODED_KEYFRAME_S = 1.0


class FrameEncoder:
    """Feeds a ``PacketRing`` by encoding a source's frames to H.264, for sources
    without encoded video of their own (``Synthetic``, ``Images``, ``Camera``, a GIF).

    x264 with ``tune=zerolatency`` gives each frame's packet at once (no lookahead,
    no B-frames), so a frame's packet is in the ring before the frame reaches a
    sink; a keyframe every ``ENCODED_KEYFRAME_S`` seconds. A change of frame size
    starts a new encoder and a new segment.
    """

    TIME_BASE = Fraction(1, 90_000)

    def __init__(self, ring: PacketRing) -> None:
        self.ring = ring
        self._codec: Any = None
        self._size: tuple[int, int] | None = None
        self._format: VideoFormat | None = None
        self._next_key = -float("inf")
        self._last = -1
        self._interval = round(1 / (30 * self.TIME_BASE))

    def add(self, image: Any, pts: float) -> None:
        import av

        height, width = image.shape[:2]
        if (width, height) != self._size:
            self._open(width, height)
        # 4:2:0 needs even sizes: repeat the last row and column.
        if width % 2 or height % 2:
            import numpy as np

            image = np.pad(image, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
        # Strictly increasing in the encoder's time, whatever the source's pts did.
        stamp = max(round(pts / self.TIME_BASE), self._last + 1)
        if self._last >= 0:
            self._interval = stamp - self._last  # the next frame's guess at a packet's duration
        self._last = stamp
        frame.pts = stamp
        frame.time_base = self.TIME_BASE
        if pts >= self._next_key:
            frame.pict_type = av.video.frame.PictureType.I
            self._next_key = pts + ENCODED_KEYFRAME_S
        for packet in self._codec.encode(frame):
            self._put(packet)

    def _open(self, width: int, height: int) -> None:
        import av

        codec = av.CodecContext.create("libx264", "w")
        codec.width, codec.height = width + width % 2, height + height % 2
        codec.pix_fmt = "yuv420p"
        codec.time_base = self.TIME_BASE
        codec.options = {"preset": "veryfast", "tune": "zerolatency", "forced-idr": "1"}
        codec.open()
        self._codec, self._size = codec, (width, height)
        self._format = VideoFormat("h264", codec.width, codec.height, self.TIME_BASE, None)
        self._next_key = -float("inf")
        self.ring.segment += 1
        self._segment = self.ring.segment

    def _put(self, packet: Any) -> None:
        assert self._format is not None
        self.ring.add(
            EncodedPacket(
                data=bytes(packet),
                pts=int(packet.pts),
                dts=int(packet.dts),
                duration=int(packet.duration or self._interval),
                key=bool(packet.is_keyframe),
                at=float(packet.pts * self.TIME_BASE),
                segment=self._segment,
                format=self._format,
            )
        )

    def close(self) -> None:
        self._codec = None  # its last packets would belong to no frame: not flushed
