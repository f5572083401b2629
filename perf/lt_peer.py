#!/usr/bin/python3
"""A libtorrent seeder or leecher for perf/compare.

Usage: lt_peer.py seed|leech TORRENT SAVE_DIR PORT STATE_DIR [--preset hps|default]

One torrent in its own session bound to 127.0.0.1:PORT: TCP only, no DHT, LSD,
UPnP, NAT-PMP, uTP or IP notifier, and no plugins (so no PEX and no ut_metadata).
The session's live settings are read back before the torrent is added; if any of
those features is on, it exits with status 3.

Settings (`--preset hps`, the default): libtorrent's high_performance_seed() preset,
except send_not_sent_low_watermark, which stays at libtorrent's default 16 KiB
(the preset's 512 KiB made a loopback seeder much slower); hashing_threads=1;
plaintext preferred (spate and rqbit do not speak MSE); several connections per
IP allowed (every peer here is 127.0.0.1). `--preset default` starts from
default_settings() instead, with the same safety settings.

It reports through files in STATE_DIR, each written atomically:
  ready   the torrent is seeding (seeder: its data passed the check)
  done    leecher: torrent_finished_alert arrived (every piece passed its SHA-1
          check); holds the time.time() of that moment
  failed  a torrent or file error, with the message
SIGUSR1 makes it announce to the tracker at once (perf/compare uses this so that
a seeder dials a Transmission leecher, which cannot dial 127.0.0.1 itself).
It runs until SIGTERM or SIGINT. Debian's python3-libtorrent is importable from
/usr/bin/python3 only.
"""
import os
import signal
import sys
import time

import libtorrent as lt

MUST_BE_OFF = ("enable_dht", "enable_lsd", "enable_upnp", "enable_natpmp",
               "enable_incoming_utp", "enable_outgoing_utp", "enable_ip_notifier")


def note(state_dir, name, text):
    tmp = os.path.join(state_dir, name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, os.path.join(state_dir, name))


def settings_for(port, preset):
    s = lt.high_performance_seed() if preset == "hps" else lt.default_settings()
    s.update({
        "listen_interfaces": "127.0.0.1:%d" % port,
        "outgoing_interfaces": "",
        "enable_dht": False,
        "dht_bootstrap_nodes": "",
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_ip_notifier": False,
        "enable_incoming_utp": False,
        "enable_outgoing_utp": False,
        "enable_incoming_tcp": True,
        "enable_outgoing_tcp": True,
        "allow_multiple_connections_per_ip": True,
        "out_enc_policy": int(lt.enc_policy.disabled),
        "in_enc_policy": int(lt.enc_policy.enabled),
        "download_rate_limit": 0,
        "upload_rate_limit": 0,
        "active_downloads": -1,
        "active_seeds": -1,
        "active_limit": -1,
        "hashing_threads": 1,
        "announce_to_all_trackers": True,
        "user_agent": "spate-perf/libtorrent-" + lt.__version__,
        "alert_mask": int(lt.alert.category_t.status_notification
                          | lt.alert.category_t.error_notification
                          | lt.alert.category_t.storage_notification),
    })
    if preset == "hps":
        s["send_not_sent_low_watermark"] = 16384
    return s


def main():
    args = sys.argv[1:]
    preset = "hps"
    if len(args) == 7 and args[5] == "--preset" and args[6] in ("hps", "default"):
        preset = args[6]
        args = args[:5]
    if len(args) != 5 or args[0] not in ("seed", "leech"):
        sys.exit(__doc__)
    role, torrent, save, port, state_dir = args[0], args[1], args[2], int(args[3]), args[4]

    stopping = []
    reannounce = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
    signal.signal(signal.SIGUSR1, lambda *_: reannounce.append(1))

    # flags 0: no default plugins; the settings go to the constructor, so DHT and
    # LSD never start, not even briefly
    ses = lt.session(settings_for(port, preset), 0)
    live = ses.get_settings()
    on = [k for k in MUST_BE_OFF if live.get(k)]
    if on or live.get("dht_bootstrap_nodes"):
        print("settings check failed: %s on" % on, flush=True)
        sys.exit(3)
    print("settings ok (preset %s): listen %s, hashing_threads %s, aio_threads %s"
          % (preset, live.get("listen_interfaces"), live.get("hashing_threads"),
             live.get("aio_threads")), flush=True)

    info = lt.torrent_info(torrent)
    if info.web_seeds():
        print("torrent has web seeds; refusing", flush=True)
        sys.exit(3)
    params = lt.add_torrent_params()
    params.ti = info
    params.save_path = save
    params.flags &= ~lt.torrent_flags.auto_managed
    params.flags &= ~lt.torrent_flags.paused
    handle = ses.add_torrent(params)

    started = time.time()
    ready = done = False
    last_status = 0.0
    while not stopping:
        ses.wait_for_alert(100)
        if reannounce:
            del reannounce[:]
            handle.force_reannounce(0, -1, lt.reannounce_flags_t.ignore_min_interval)
            print("force_reannounce", flush=True)
        for alert in ses.pop_alerts():
            kind = type(alert).__name__
            if kind in ("torrent_error_alert", "file_error_alert"):
                print("%s: %s" % (kind, alert.message()), flush=True)
                note(state_dir, "failed", alert.message())
            elif kind == "torrent_finished_alert" and role == "leech" and not done:
                done = True
                note(state_dir, "done", "%.6f" % time.time())
                print("finished after %.3f s" % (time.time() - started), flush=True)
            elif kind in ("hash_failed_alert", "listen_failed_alert", "tracker_error_alert"):
                print("%s: %s" % (kind, alert.message()), flush=True)
        status = handle.status()
        if not ready and status.is_seeding:
            ready = True
            note(state_dir, "ready", "%.6f" % time.time())
            print("seeding after %.3f s" % (time.time() - started), flush=True)
        now = time.time()
        if now - last_status >= 5.0:
            last_status = now
            print("t=%.1f state=%s progress=%.4f peers=%d down=%d up=%d"
                  % (now - started, status.state, status.progress, status.num_peers,
                     status.total_payload_download, status.total_payload_upload), flush=True)
    ses.pause()


if __name__ == "__main__":
    main()
