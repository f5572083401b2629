#!/usr/bin/python3
"""A libtorrent seeder or leecher, for spate's interoperability tests (tests/interop.rs)
and for perf/compare.

Usage: lt_peer.py seed|leech TORRENT SAVE_DIR PORT STATE_DIR
                  [--connect IP:PORT]... [--preset default|hps]
                  [--encryption plain|forced] [--metadata on]
                  [--dht-bootstrap 127.0.0.1:PORT] [--pex on]

Runs one torrent in its own session bound to 127.0.0.1:PORT, TCP only, with
DHT, LSD, UPnP, NAT-PMP, uTP and the IP notifier off and no plugins (so no
PEX, no ut_metadata). The session's live settings are read back; if any of
those is on, it exits with status 3 before adding the torrent. It dials with a
plain handshake (rqbit does not speak MSE; spate only answers it) and several
connections per IP are allowed (every peer here is 127.0.0.1).

--preset default (the default) starts from libtorrent's default_settings();
--preset hps from high_performance_seed(), except send_not_sent_low_watermark,
which stays at 16 KiB (the preset's 512 KiB made a loopback seeder much slower).
--connect: peers it dials itself once its data is checked.
--dht-bootstrap: the DHT is on, with that one loopback node to bootstrap from (and
libtorrent's rules against several nodes on one IP off, since every node here is
127.0.0.1); the settings check then requires exactly that bootstrap node.
--metadata on: the ut_metadata extension (BEP 9) is added, so the session sends
and fetches info dictionaries, and a leecher's TORRENT may be a magnet link.
--pex on: the ut_pex extension (BEP 11) is added, so the session exchanges peer
addresses with its peers; it then also writes STATE_DIR/peers (see below).
--encryption forced: it dials and answers with the MSE/PE handshake only (offering
plaintext or RC4 after it, as libtorrent's default allowed_enc_level does); plain,
the default, dials with a plain handshake and answers either.

It reports through files in STATE_DIR (written atomically):
  active once the torrent is past its checks and accepts peers (libtorrent
         turns incoming peers away while a torrent is checking)
  ready  once the torrent is seeding (seeder: the data was checked)
  done   leecher: once torrent_finished_alert arrived (every piece checked);
         holds the time.time() of that moment
  failed on a torrent or file error, with the message
  peers  with --pex on: the connected peers, one "IP:PORT SOURCE" line each, where
         SOURCE is "pex" for a peer learned through peer exchange, else "-"
SIGUSR1 makes it announce to the tracker at once (perf/compare uses this so that
a seeder dials a Transmission leecher, which cannot dial 127.0.0.1 itself).
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


def parse_args(args):
    if len(args) < 5 or args[0] not in ("seed", "leech"):
        sys.exit(__doc__)
    role, torrent, save, port, state_dir = args[0], args[1], args[2], int(args[3]), args[4]
    rest = args[5:]
    connect, preset, encryption, metadata, dht, pex = [], "default", "plain", False, None, False
    while rest:
        if rest[0] == "--connect" and len(rest) >= 2:
            connect.append(parse_addr(rest[1]))
        elif rest[0] == "--preset" and len(rest) >= 2 and rest[1] in ("default", "hps"):
            preset = rest[1]
        elif rest[0] == "--encryption" and len(rest) >= 2 and rest[1] in ("plain", "forced"):
            encryption = rest[1]
        elif rest[0] == "--metadata" and len(rest) >= 2 and rest[1] == "on":
            metadata = True
        elif rest[0] == "--dht-bootstrap" and len(rest) >= 2 and rest[1].startswith("127."):
            dht = rest[1]
        elif rest[0] == "--pex" and len(rest) >= 2 and rest[1] == "on":
            pex = True
        else:
            sys.exit("unexpected argument %r" % rest[0])
        rest = rest[2:]
    return role, torrent, save, port, state_dir, connect, preset, encryption, metadata, dht, pex


def settings_for(port, preset, encryption, dht):
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
        "user_agent": "spate-test/libtorrent-" + lt.__version__,
        "alert_mask": int(lt.alert.category_t.status_notification
                          | lt.alert.category_t.error_notification
                          | lt.alert.category_t.storage_notification
                          | lt.alert.category_t.tracker_notification
                          | lt.alert.category_t.connect_notification),
    })
    if preset == "hps":
        s["send_not_sent_low_watermark"] = 16384
    if dht:
        s["enable_dht"] = True
        s["dht_bootstrap_nodes"] = dht
        s["dht_restrict_routing_ips"] = False
        s["dht_restrict_search_ips"] = False
    if encryption == "forced":
        s["out_enc_policy"] = int(lt.enc_policy.forced)
        s["in_enc_policy"] = int(lt.enc_policy.forced)
        s["allowed_enc_level"] = int(lt.enc_level.both)
        s["prefer_rc4"] = False
    return s


def main():
    role, torrent, save, port, state_dir, connect, preset, encryption, metadata, dht, pex = \
        parse_args(sys.argv[1:])

    stopping = []
    reannounce = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(1))
    signal.signal(signal.SIGUSR1, lambda *_: reannounce.append(1))

    # flags 0: no default plugins; settings given to the constructor, so DHT
    # and LSD never start, not even briefly
    ses = lt.session(settings_for(port, preset, encryption, dht), 0)
    live = ses.get_settings()
    on = [k for k in MUST_BE_OFF if live.get(k) and not (dht and k == "enable_dht")]
    if on or live.get("dht_bootstrap_nodes") != (dht or ""):
        print("settings check failed: %s are on" % on, flush=True)
        sys.exit(3)
    print("settings ok (preset %s, encryption %s): listen %s, hashing_threads %s, aio_threads %s"
          % (preset, encryption, live.get("listen_interfaces"), live.get("hashing_threads"),
             live.get("aio_threads")), flush=True)

    if metadata:
        ses.add_extension("ut_metadata")
    if pex:
        ses.add_extension("ut_pex")
    if metadata and role == "leech" and torrent.startswith("magnet:"):
        params = lt.parse_magnet_uri(torrent)
    else:
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
    active = ready = done = connected = False
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
            elif kind in ("peer_connect_alert", "peer_disconnected_alert", "peer_error_alert",
                          "hash_failed_alert", "listen_failed_alert", "listen_succeeded_alert",
                          "tracker_error_alert", "tracker_reply_alert"):
                print("%s: %s" % (kind, alert.message()), flush=True)
        status = handle.status()
        if not ready and status.is_seeding:
            ready = True
            note(state_dir, "ready", "%.6f" % time.time())
            print("seeding after %.3f s" % (time.time() - started), flush=True)
        checking = status.state in (lt.torrent_status.checking_files,
                                    lt.torrent_status.checking_resume_data)
        if not active and not checking and not status.paused:
            active = True
            note(state_dir, "active", "%.6f" % time.time())
            print("active (state=%s) after %.3f s" % (status.state, time.time() - started),
                  flush=True)
        if connect and not connected and not checking:
            connected = True
            for addr in connect:
                handle.connect_peer(addr)
                print("connecting to %s:%d" % addr, flush=True)
        now = time.time()
        if pex:
            note(state_dir, "peers", "".join(
                "%s:%d %s\n" % (p.ip[0], p.ip[1], "pex" if p.source & lt.peer_info.pex else "-")
                for p in handle.get_peer_info()))
        if now - last_status >= 2.0:
            last_status = now
            print("t=%.1f state=%s progress=%.4f peers=%d down=%d up=%d"
                  % (now - started, status.state, status.progress, status.num_peers,
                     status.total_payload_download, status.total_payload_upload), flush=True)
    ses.pause()


if __name__ == "__main__":
    main()
