#!/usr/bin/python3
"""Minimal GStreamer RTSP test server for Sightline's integration tests.

What it is for
--------------
Integration tests need a real, local RTSP camera: an H.264 stream (x264 Main
or High profile, no B-frames, fixed GOP) served over RTSP with RTP over TCP
(interleaved) and/or UDP, optionally protected by Basic/Digest auth.  What
real cameras also send is an option away: --codec h265 (x265enc, RFC 7798),
--bframes N (reordered pictures), --codec mjpeg (a codec the gateway refuses),
--switch-after S (a picture size change inside one RTP session) and --audio
pcma|pcmu|aac|opus (a 440 Hz tone beside the video, as doorbells and most
cameras send: G.711 at 8 kHz, AAC-LC at 16 kHz, Opus at 48 kHz); --drop P and
--reorder P make a lossy network (GStreamer's netsim behind the payloader).  This
script serves an SMPTE test pattern (moving, with a time overlay) through
gst-rtsp-server, bound to 127.0.0.1 only.

Requirements (Debian/Ubuntu packages)
-------------------------------------
    python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp
    gstreamer1.0-plugins-base gstreamer1.0-plugins-good
    gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly   (x264enc)

It must be run with the system interpreter that has the `gi` bindings, i.e.
`/usr/bin/python3` (a pyenv/venv python first on PATH usually lacks `gi`).

How to run
----------
    /usr/bin/python3 scripts/gst_rtsp_server.py --port 8554
    /usr/bin/python3 scripts/gst_rtsp_server.py --port 8554 --path /cam \\
        --width 1280 --height 720 --fps 25 --gop 50 --bitrate 2000 \\
        --profile main --transport both --user admin --password secret \\
        --auth-method both

Once the server is listening it prints exactly one line to stdout

    READY rtsp://127.0.0.1:8554/cam

(flushed), so a harness can spawn it and wait for that line.  The URL never
contains credentials.  Check it with e.g.

    ffprobe -v error -rtsp_transport tcp \\
        -show_entries stream=codec_name,profile,width,height,has_b_frames \\
        -of json rtsp://127.0.0.1:8554/cam

SIGTERM / SIGINT quit the GLib main loop and the process exits with status 0.

Notes
-----
* The media factory is shared: all clients see the same encoder instance.
  The pipeline is only started when the first client connects (first frame
  after ~1 s) and is torn down when the last one leaves.  A client joining a
  running stream waits up to one GOP (--gop / --fps seconds, 2 s by default)
  for the next IDR, like with a real camera; joining does not disturb the
  other clients (the media is made non-seekable, see _block_seeking).
  SPS/PPS are sent with every IDR (config-interval=-1).
* x264's scene-cut detection is disabled (option-string=scenecut=0) so that
  IDRs come exactly every --gop frames; with it the moving test pattern
  triggers extra IDRs (about every 28 frames at the defaults).
* Do not use speed-preset=ultrafast: it disables CABAC, so x264 would
  produce a (Constrained) Baseline stream instead of Main/High.
* With --user/--password, anonymous requests get 401; only that user (Basic
  or Digest, see --auth-method) is granted the role that may access and
  construct the media.  With both schemes the 401 carries two
  WWW-Authenticate headers (Basic and Digest).
"""

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

BIND_ADDRESS = "127.0.0.1"
# Server-side RTP/RTCP UDP ports (for UDP transport) are taken from this range
# on 127.0.0.1 (without an address pool gst-rtsp-server binds them on
# 0.0.0.0 and ::).  Ports already in use are skipped, so several servers can
# run in parallel.  The range sits below Linux' ephemeral port range.
RTP_PORT_MIN, RTP_PORT_MAX = 20000, 29999
ROLE = "sightline-test-user"


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Serve a synthetic H.264 RTSP stream for Sightline tests.")
    p.add_argument("--port", type=int, required=True,
                   help="RTSP TCP port (bound on 127.0.0.1 only)")
    p.add_argument("--path", default="/cam", help="mount path (default /cam)")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--gop", type=int, default=50,
                   help="keyframe interval in frames (default 50)")
    p.add_argument("--bitrate", type=int, default=2000,
                   help="x264 bitrate in kbit/s (default 2000)")
    p.add_argument("--profile", choices=("main", "high"), default="main",
                   help="H.264 profile (H.265 is always Main)")
    p.add_argument("--codec", choices=("h264", "h265", "mjpeg"), default="h264",
                   help="x264enc (RFC 6184), x265enc (RFC 7798) or jpegenc (RFC 2435, "
                        "a codec the gateway does not take)")
    p.add_argument("--bframes", type=int, default=0,
                   help="B-frames between references (default 0; > 0 reorders "
                        "pictures, as many cameras' 'smart' modes do)")
    p.add_argument("--switch-after", type=float, default=None, metavar="SECONDS",
                   help="change the picture size this long after the media starts, "
                        "in the same RTP session (new SPS in-band), as a camera "
                        "reconfigured by its owner does")
    p.add_argument("--switch-size", default="640x360", metavar="WxH",
                   help="the size --switch-after changes to (default 640x360)")
    p.add_argument("--relay", default=None, metavar="RTSP_URL",
                   help="re-encode another RTSP server's H.264 (e.g. the gateway's test "
                        "camera, whose shapes detection tests know) instead of the test "
                        "pattern")
    p.add_argument("--sdp-only-parameters", action="store_true",
                   help="parameter sets only in the SDP (sprop-*), never in-band "
                        "(payloader config-interval=0), as some cameras do")
    p.add_argument("--audio", choices=("pcma", "pcmu", "aac", "opus"), default=None,
                   help="also send audio: a 440 Hz tone as G.711 A-law/u-law "
                        "(alawenc/mulawenc, 8 kHz), AAC-LC (avenc_aac, 16 kHz, RFC 3640) "
                        "or Opus (48 kHz, a codec the gateway does not take)")
    p.add_argument("--drop", type=float, default=0.0, metavar="P",
                   help="drop each video RTP packet with probability P (netsim), as a "
                        "lossy network does; meant for --transport udp")
    p.add_argument("--reorder", type=float, default=0.0, metavar="P",
                   help="hold each video RTP packet back 5-40 ms with probability P "
                        "(netsim), so it arrives after later ones")
    p.add_argument("--user", default=None)
    p.add_argument("--password", default=None)
    p.add_argument("--transport", choices=("tcp", "udp", "both"),
                   default="both",
                   help="allowed RTP lower transports (default both)")
    p.add_argument("--auth-method", choices=("basic", "digest", "both"),
                   default="both",
                   help="RTSP auth schemes offered when --user is given "
                        "(default both)")
    args = p.parse_args(argv)
    if (args.user is None) != (args.password is None):
        p.error("--user and --password must be given together")
    if not args.path.startswith("/"):
        args.path = "/" + args.path
    for name in ("port", "width", "height", "fps", "gop", "bitrate"):
        if getattr(args, name) <= 0:
            p.error("--%s must be positive" % name)
    return args


def build_launch(args):
    if args.relay:
        src = (
            "( rtspsrc location={url} protocols=tcp latency=0 "
            "! rtph264depay ! avdec_h264 ! videoconvert "
        ).format(url=args.relay)
    else:
        # The size is set after videoscale, by the capsfilter named "size", so
        # that --switch-after can change it while the media plays.
        src = (
            "( videotestsrc is-live=true pattern=smpte horizontal-speed=4 "
            "! video/x-raw,framerate={fps}/1 ! videoscale "
            "! capsfilter name=size caps=video/x-raw,width={w},height={h} "
            "! timeoverlay "
        ).format(w=args.width, h=args.height, fps=args.fps)
    return src + video_encoder(args) + audio_branch(args.audio) + " )"


# (rate, samples per buffer: 20 ms for G.711 and Opus, one AAC frame, encoder).
AUDIO = {
    "pcma": (8000, 160, "alawenc ! rtppcmapay name=pay1 pt=8"),
    "pcmu": (8000, 160, "mulawenc ! rtppcmupay name=pay1 pt=0"),
    "aac": (16000, 1024, "avenc_aac ! rtpmp4gpay name=pay1 pt=97"),
    "opus": (48000, 960, "opusenc ! rtpopuspay name=pay1 pt=98"),
}


def audio_branch(audio):
    if audio is None:
        return ""
    rate, samples, enc = AUDIO[audio]
    return (" audiotestsrc is-live=true wave=sine freq=440 volume=0.3 "
            "samplesperbuffer=%d ! audio/x-raw,rate=%d,channels=1 ! %s"
            % (samples, rate, enc))


def video_encoder(args):
    if args.codec == "mjpeg":
        # RFC 2435 carries 4:2:0 and 4:2:2 only.
        return "! videoconvert ! video/x-raw,format=I420 ! jpegenc quality=70 ! rtpjpegpay name=pay0 pt=26"
    if args.codec == "h265":
        # Both encoders' zerolatency tune forbids B-frames: only set without them.
        enc = (
            "! x265enc {tune}speed-preset=superfast bitrate={br} "
            "key-int-max={gop} option-string=scenecut=0:bframes={bf} "
            "! video/x-h265,profile=main "
            "! rtph265pay name={pay} pt=96 config-interval={ci}"
        )
    else:
        enc = (
            "! x264enc {tune}speed-preset=superfast bitrate={br} "
            "key-int-max={gop} bframes={bf} option-string=scenecut=0 "
            "! video/x-h264,profile={profile} "
            "! rtph264pay name={pay} pt=96 config-interval={ci}"
        )
    if args.drop or args.reorder:
        # The RTSP server takes the element named pay0 as the stream's source of RTP
        # packets: here the network simulator behind the payloader.
        enc += (" ! netsim name=pay0 drop-probability={drop} delay-probability={reorder} "
                "min-delay=5 max-delay=40")
    return enc.format(pay="pay" if (args.drop or args.reorder) else "pay0",
                      drop=args.drop, reorder=args.reorder,
                      br=args.bitrate, gop=args.gop, bf=args.bframes,
                      ci=0 if args.sdp_only_parameters else -1,
                      profile=args.profile,
                      tune="" if args.bframes else "tune=zerolatency ")


def _block_seeking(pad, info):
    """Pad probe making the (shared, live) media non-seekable.

    videotestsrc is seekable even with is-live=true, so gst-rtsp-server
    honours the "Range: npt=0-" that clients such as ffmpeg send with PLAY by
    doing a flushing seek of the *shared* pipeline.  Every new client would
    then reset the stream for everybody (RTP timestamps jump back, a new IDR
    appears) and, racing with other clients' PLAY, can hit the fatal
    `gst_rtsp_media_get_rates: assertion failed` in gst-rtsp-server 1.22.
    Answering the SEEKING query ourselves (seekable=FALSE, the default of a
    fresh query) makes the media behave like a real camera.
    """
    if info.type & Gst.PadProbeType.QUERY_UPSTREAM:
        query = info.get_query()
        if query is not None and query.type == Gst.QueryType.SEEKING:
            return Gst.PadProbeReturn.HANDLED
    elif info.type & Gst.PadProbeType.EVENT_UPSTREAM:
        event = info.get_event()
        if event is not None and event.type == Gst.EventType.SEEK:
            return Gst.PadProbeReturn.DROP
    return Gst.PadProbeReturn.OK


def _on_media_configure(_factory, media, args):
    # Every payloader: one seekable stream (the audio one) makes the media seekable.
    for name in ("pay0", "pay1"):
        pay = media.get_element().get_by_name(name)
        if pay is not None:
            pay.get_static_pad("src").add_probe(
                Gst.PadProbeType.QUERY_UPSTREAM | Gst.PadProbeType.EVENT_UPSTREAM,
                _block_seeking)
    if args.switch_after is not None:
        size = media.get_element().get_by_name("size")
        w, h = (int(v) for v in args.switch_size.split("x"))

        def switch():
            size.set_property("caps", Gst.Caps.from_string(
                "video/x-raw,width=%d,height=%d" % (w, h)))
            # stderr: harnesses stop reading stdout after the READY line.
            print("switched to %dx%d" % (w, h), file=sys.stderr, flush=True)
            return False

        GLib.timeout_add(int(args.switch_after * 1000), switch)


def _set_supported_methods(auth, methods):
    """RTSPAuth.set_supported_methods() with a Basic|Digest bitmask.

    GstRTSPAuthMethod is introspected as an enum, so PyGObject rejects the
    OR-ed value 3 ("invalid enum value").  Single methods go through GI; the
    combination is set by calling the C function through ctypes.
    """
    if methods in ("basic", "digest"):
        auth.set_supported_methods(
            GstRtsp.RTSPAuthMethod.BASIC if methods == "basic"
            else GstRtsp.RTSPAuthMethod.DIGEST)
        return
    import ctypes
    capi = ctypes.pythonapi
    capi.PyCapsule_GetPointer.restype = ctypes.c_void_p
    capi.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    ptr = capi.PyCapsule_GetPointer(auth.__gpointer__, None)
    lib = ctypes.CDLL("libgstrtspserver-1.0.so.0")
    lib.gst_rtsp_auth_set_supported_methods.argtypes = [ctypes.c_void_p,
                                                        ctypes.c_int]
    lib.gst_rtsp_auth_set_supported_methods.restype = None
    lib.gst_rtsp_auth_set_supported_methods(
        ptr, int(GstRtsp.RTSPAuthMethod.BASIC)
        | int(GstRtsp.RTSPAuthMethod.DIGEST))


def setup_auth(server, factory, user, password, methods):
    auth = GstRtspServer.RTSPAuth()
    _set_supported_methods(auth, methods)
    auth.set_realm("Sightline")

    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, ROLE)
    if methods in ("basic", "both"):
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password),
                       token)
    if methods in ("digest", "both"):
        auth.add_digest(user, password, token)
    # No default token: anonymous clients get no role -> 401 Unauthorized.
    server.set_auth(auth)

    perms = Gst.Structure.new_from_string(
        "%s, %s=(boolean)true, %s=(boolean)true" % (
            ROLE,
            GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS,
            GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT))
    factory.add_role_from_structure(perms)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    Gst.init(None)

    server = GstRtspServer.RTSPServer()
    server.set_address(BIND_ADDRESS)
    server.set_service(str(args.port))

    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(build_launch(args))
    factory.set_shared(True)
    factory.connect("media-configure", _on_media_configure, args)
    protocols = {
        "tcp": GstRtsp.RTSPLowerTrans.TCP,
        "udp": GstRtsp.RTSPLowerTrans.UDP,
        "both": GstRtsp.RTSPLowerTrans.TCP | GstRtsp.RTSPLowerTrans.UDP,
    }[args.transport]
    factory.set_protocols(protocols)

    pool = GstRtspServer.RTSPAddressPool()
    pool.add_range(BIND_ADDRESS, BIND_ADDRESS, RTP_PORT_MIN, RTP_PORT_MAX, 0)
    factory.set_address_pool(pool)

    if args.user is not None:
        setup_auth(server, factory, args.user, args.password,
                   args.auth_method)

    server.get_mount_points().add_factory(args.path, factory)

    loop = GLib.MainLoop()

    def on_signal(*_):
        loop.quit()
        return GLib.SOURCE_REMOVE

    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, on_signal)

    # attach() creates, binds and listens on the socket; 0 means failure
    # (e.g. port already in use).
    if server.attach(None) == 0:
        print("ERROR: cannot listen on %s:%d" % (BIND_ADDRESS, args.port),
              file=sys.stderr, flush=True)
        return 1

    print("READY rtsp://%s:%d%s" % (BIND_ADDRESS, args.port, args.path),
          flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
