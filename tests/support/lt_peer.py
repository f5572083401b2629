#!/usr/bin/python3
"""A libtorrent peer for spate's interoperability tests (tests/interop.rs).

Usage: lt_peer.py seed|leech TORRENT SAVE_DIR PORT STATE_DIR [--connect IP:PORT]...

Runs one torrent in its own session bound to 127.0.0.1:PORT, TCP only, with
DHT, LSD, UPnP, NAT-PMP, uTP and the IP notifier off and no plugins (so no
PEX, no ut_metadata). The session's live settings are read back; if any of
those is on, it exits with status 3 before adding the torrent.

It reports through files in STATE_DIR (written atomically):
  active once the torrent is past its checks and accepts peers (libtorrent
         turns incoming peers away while a torrent is checking)
  ready  once the torrent is seeding (seeder: the data was checked)
  done   leecher: once torrent_finished_alert arrived (every piece checked)
  failed on a torrent or file error, with the message
It runs until SIGTERM/SIGINT. Debian's python3-libtorrent is importable from
/usr/bin/python3 only.
"""
import os
import signal
import sys
import time

import libtorrent as lt

MUST_BE_OFF = ("enable_dht", "enable_lsd", "enable_upnp", "enable_natpmp",
               "enable_incoming_utp", "enable_outgoing_utp", "enable_ip_notifier")


def note(state_dir, name, text=""):
    tmp = os.path.join(state_dir, name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, os.path.join(state_dir, name))


def parse_addr(text):
    host, _, port = text.rpartition(":")
    return host, int(port)


def main():
    args = sys.argv[1:]
    if len(args) < 5 or args[0] not in ("seed", "leech"):
        sys.exit(__doc__)
    role, torrent, save, port, state_dir = args[0], args[1], args[2], int(args[3]), args[4]
    rest = args[5:]
    connect = []
    while rest:
        if rest[0] != "--connect" or len(rest) < 2:
            sys.exit("unexpected argument %r" % rest[0])
        connect.append(parse_addr(rest[1]))
        rest = rest[2:]

    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(1))

    settings = {
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
        # every peer is 127.0.0.1
        "allow_multiple_connections_per_ip": True,
        # plaintext BitTorrent: spate does not speak MSE
        "out_enc_policy": int(lt.enc_policy.disabled),
        "in_enc_policy": int(lt.enc_policy.enabled),
        "user_agent": "spate-interop/libtorrent-" + lt.__version__,
        "alert_mask": int(lt.alert.category_t.status_notification
                          | lt.alert.category_t.error_notification
                          | lt.alert.category_t.storage_notification
                          | lt.alert.category_t.connect_notification),
    }
    # flags 0: no default plugins; settings given to the constructor, so DHT
    # and LSD never start, not even briefly
    ses = lt.session(settings, 0)
    live = ses.get_settings()
    on = [k for k in MUST_BE_OFF if live.get(k)]
    if on or live.get("dht_bootstrap_nodes"):
        print("settings check failed: %s are on" % on, flush=True)
        sys.exit(3)
    print("settings ok: listen %s" % live.get("listen_interfaces"), flush=True)

    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(torrent)
    params.save_path = save
    params.flags &= ~lt.torrent_flags.auto_managed
    params.flags &= ~lt.torrent_flags.paused
    handle = ses.add_torrent(params)

    started = time.time()
    active = ready = done = False
    connected = False
    last_status = 0.0
    while not stopping:
        ses.wait_for_alert(100)
        for alert in ses.pop_alerts():
            kind = type(alert).__name__
            if kind in ("torrent_error_alert", "file_error_alert"):
                print("%s: %s" % (kind, alert.message()), flush=True)
                note(state_dir, "failed", alert.message())
            elif kind == "torrent_finished_alert" and role == "leech" and not done:
                done = True
                note(state_dir, "done", "%.6f" % time.time())
                print("finished after %.2f s" % (time.time() - started), flush=True)
            elif kind in ("peer_connect_alert", "peer_disconnected_alert", "peer_error_alert",
                          "hash_failed_alert", "listen_failed_alert", "listen_succeeded_alert"):
                print("%s: %s" % (kind, alert.message()), flush=True)
        status = handle.status()
        if not ready and status.is_seeding:
            ready = True
            note(state_dir, "ready", "%.6f" % time.time())
            print("seeding after %.2f s" % (time.time() - started), flush=True)
        checking = status.state in (lt.torrent_status.checking_files,
                                    lt.torrent_status.checking_resume_data)
        if not active and not checking and not status.paused:
            active = True
            note(state_dir, "active", "%.6f" % time.time())
            print("active (state=%s) after %.2f s" % (status.state, time.time() - started),
                  flush=True)
        if connect and not connected and not checking:
            connected = True
            for addr in connect:
                handle.connect_peer(addr)
                print("connecting to %s:%d" % addr, flush=True)
        now = time.time()
        if now - last_status >= 2.0:
            last_status = now
            print("t=%.1f state=%s progress=%.4f peers=%d down=%d up=%d"
                  % (now - started, status.state, status.progress, status.num_peers,
                     status.total_payload_download, status.total_payload_upload), flush=True)
    ses.pause()


if __name__ == "__main__":
    main()
