"""tg-bridge: puts the tgvoice FIFO pipeline into a real Telegram call (py-tgcalls/ntgcalls).

Modules: ``fifo`` (non-blocking FIFO ends), ``rundir`` ($RUN and its FIFOs), ``media`` (the
10 ms sender and the incoming-audio writer), ``backend`` (the CallBackend seam and its
py-tgcalls implementation), ``local_p2p`` (a CallBackend over a local ntgcalls pair, no
account), ``bridge`` (call lifecycle), ``telegram`` (credentials, session, login), ``cli``.
"""
__version__ = "0.1.0"
