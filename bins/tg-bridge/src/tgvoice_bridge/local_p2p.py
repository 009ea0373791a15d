"""A CallBackend over a real local ntgcalls private call — real Opus/WebRTC media, no account.

``LocalP2PPair`` owns two ``ntgcalls.NTgCalls`` in one process and plays the part Telegram's
servers play for a private call: it rings the other side, hands both sides the same 256-byte
key (``skip_exchange`` instead of the DH exchange), carries signaling between them (queued
until the callee has created its call), and tells the other side when one hangs up. Media
flows over ICE host candidates with no relay servers, so run it where the only interfaces
are ones you own: loopback-only hosts do not work (WebRTC ignores lo), so the tests create a
network namespace with a veth pair (see tests/test_real_media.py).
"""
import asyncio
import logging
import os

import ntgcalls as N

from .backend import CallBackend

log = logging.getLogger("tg-bridge")


def _external_audio():
    a = N.AudioDescription(media_source=N.MediaSource.EXTERNAL, input="", sample_rate=48000,
                           channel_count=1, keep_open=False)
    return N.MediaDescription(microphone=a, speaker=None, camera=None, screen=None)


class LocalP2PBackend(CallBackend):
    def __init__(self, pair, user_id):
        super().__init__()
        self.pair, self.user_id = pair, user_id
        self.ntg = N.NTgCalls()
        self.loop = None
        self.queued_signaling = []
        self.ready = False            # our p2p call exists: signaling can be delivered
        self.connection_states = []
        self.lost = set()

    @property
    def other(self):
        return self.pair.b if self is self.pair.a else self.pair.a

    async def start(self):
        self.loop = asyncio.get_running_loop()
        other = self.other

        def signaling(_chat, data):
            self.loop.call_soon_threadsafe(other.deliver_signaling, bytes(data))

        def frames(chat, mode, device, frames):
            if mode != N.StreamMode.PLAYBACK or device != N.StreamDevice.MICROPHONE:
                return
            from pytgcalls.types import Frame
            batch = [Frame(f.ssrc, bytes(f.data), Frame.Info()) for f in frames]
            self.loop.call_soon_threadsafe(self._frames, chat, batch)

        def connection(chat, info):
            self.loop.call_soon_threadsafe(self._connection_changed, chat, info.state)

        self.ntg.on_signaling_data(signaling)
        self.ntg.on_frames(frames)
        self.ntg.on_connection_change(connection)

    def _connection_changed(self, chat, state):
        self.connection_states.append(state)
        if state in (N.ConnectionState.FAILED, N.ConnectionState.TIMEOUT, N.ConnectionState.CLOSED):
            self.lost.add(chat)
        elif state == N.ConnectionState.CONNECTED:
            self.lost.discard(chat)

    def _frames(self, chat, batch):
        if self.on_frames:
            self.on_frames(chat, batch)

    def deliver_signaling(self, data):
        if not self.ready:
            self.queued_signaling.append(data)
            return
        asyncio.ensure_future(self._send_signaling(data))

    async def _send_signaling(self, data):
        try:
            await self.ntg.send_signaling_data(self.other.user_id, data)
        except (N.ConnectionNotFound, N.ConnectionError) as e:
            log.debug("signaling for a call that is gone: %s", e)

    async def _setup(self, peer, outgoing):
        await self.ntg.create_p2p_call(peer)
        await self.ntg.set_stream_sources(peer, N.StreamMode.CAPTURE, _external_audio())
        await self.ntg.set_stream_sources(peer, N.StreamMode.PLAYBACK, _external_audio())
        await self.ntg.skip_exchange(peer, self.pair.key, outgoing)
        self.ready = True
        for data in self.queued_signaling:
            await self._send_signaling(data)
        self.queued_signaling.clear()
        versions = N.NTgCalls.get_protocol().library_versions
        await self.ntg.connect_p2p(peer, [], versions, True, None)

    async def stop(self):
        pass

    async def join_group(self, chat_id, auto_start):
        raise NotImplementedError("the local pair only does private calls")

    async def place_call(self, user_id, timeout_s):
        assert user_id == self.other.user_id, "the local pair can only call its other half"
        await self._setup(user_id, True)
        if self.other.on_incoming_call:
            asyncio.ensure_future(self.other.on_incoming_call(self.user_id))

    async def answer(self, user_id):
        await self._setup(user_id, False)

    async def decline(self, user_id):
        await self.other._remote_ended("declined")

    async def hang_up(self, chat_id):
        await self._stop_call(chat_id)
        await self.other._remote_ended("hung-up")

    async def _stop_call(self, chat_id):
        self.ready = False
        try:
            await self.ntg.stop(chat_id)
        except N.ConnectionNotFound:
            pass

    async def _remote_ended(self, reason):
        await self._stop_call(self.other.user_id)
        if self.on_call_ended:
            await self.on_call_ended(self.other.user_id, reason)

    async def send_frame(self, chat_id, pcm):
        await self.ntg.send_external_frame(chat_id, N.StreamDevice.MICROPHONE, pcm,
                                           N.FrameData(0, N.VideoRotation.VIDEO_ROTATION_0, 0, 0))

    async def connected_calls(self):
        return set((await self.ntg.calls()).keys()) - self.lost


class LocalP2PPair:
    def __init__(self, user_a=1001, user_b=1002):
        self.key = os.urandom(256)
        self.a = LocalP2PBackend(self, user_a)
        self.b = LocalP2PBackend(self, user_b)
