#!/usr/bin/env python3
"""Generates the Grafana dashboards in dashboards/ (committed; CI checks they are current).

Every query uses metric names the binaries export (docs/metrics.md, docs/live-policy.md,
docs/controlplane.md); scripts/infra-check.sh syntax-checks each one with promtool and runs
it against a Prometheus scraping the real binaries.
"""
import json
import pathlib

DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"


def target(expr, legend, ref):
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref}


class Board:
    def __init__(self, uid, title, tags):
        self.uid, self.title, self.tags = uid, title, tags
        self.panels, self.y, self.x, self.next_id = [], 0, 0, 1

    def row(self, title):
        if self.x:
            self.y += 8
            self.x = 0
        self.panels.append({"type": "row", "title": title, "id": self.next_id, "collapsed": False,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.next_id += 1
        self.y += 1

    def panel(self, kind, title, targets, unit="short", w=12, h=8, desc=""):
        if self.x + w > 24:
            self.x = 0
            self.y += h
        p = {
            "type": kind,
            "title": title,
            "description": desc,
            "id": self.next_id,
            "datasource": DS,
            "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "table", "placement": "right", "showLegend": True,
                                   "calcs": ["lastNotNull", "max"]},
                        "tooltip": {"mode": "multi", "sort": "desc"}} if kind == "timeseries" else
                       {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "value", "graphMode": "area", "textMode": "auto",
                        "justifyMode": "auto", "orientation": "auto"},
            "targets": [target(e, l, chr(ord("A") + i)) for i, (e, l) in enumerate(targets)],
        }
        self.panels.append(p)
        self.next_id += 1
        self.x += w
        if self.x >= 24:
            self.x = 0
            self.y += h

    def json(self, variables):
        return {
            "uid": self.uid,
            "title": self.title,
            "tags": self.tags,
            "editable": True,
            "graphTooltip": 1,
            "schemaVersion": 39,
            "version": 1,
            "time": {"from": "now-1h", "to": "now"},
            "refresh": "30s",
            "timezone": "browser",
            "annotations": {"list": []},
            "links": [],
            "templating": {"list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source",
                 "hide": 0, "refresh": 1, "current": {"text": "default", "value": "default"},
                 "options": [], "includeAll": False, "multi": False},
            ] + variables},
            "panels": self.panels,
        }


def query_var(name, label, metric):
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "query": {"query": f"label_values({metric}, {name})", "refId": f"{name}-var"},
            "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*",
            "current": {"text": "All", "value": "$__all"}, "options": [], "hide": 0, "sort": 1}


def dataplane():
    s = 'instance=~"$instance"'
    b = Board("zcproxy-dataplane", "zcproxy / data plane per core", ["zcproxy"])
    b.row("Overview")
    b.panel("stat", "Cores serving", [(f"sum(zcproxy_cores{{{s}}})", "cores")], w=6, h=4)
    b.panel("stat", "Ready proxies", [(f"sum(zcproxy_ready{{{s}}})", "ready")], w=6, h=4)
    b.panel("stat", "Open connections", [(f"sum(zcproxy_connections_active{{{s}}})", "open")], w=6, h=4)
    b.panel("stat", "Throughput", [(f"8 * sum(rate(zcproxy_bytes_client_to_upstream_total{{{s}}}[{RATE}]) + rate(zcproxy_bytes_upstream_to_client_total{{{s}}}[{RATE}]))", "bits/s")], unit="bps", w=6, h=4)
    b.row("Connections (each core side by side, and the total)")
    b.panel("timeseries", "Open connections by core", [
        (f"sum by (instance, core) (zcproxy_connections_active{{{s}}})", "{{instance}} core {{core}}"),
        (f"sum(zcproxy_connections_active{{{s}}})", "total")])
    b.panel("timeseries", "Accepted connections/s by core", [
        (f"sum by (instance, core) (rate(zcproxy_accepted_connections_total{{{s}}}[{RATE}]))", "{{instance}} core {{core}}"),
        (f"sum(rate(zcproxy_accepted_connections_total{{{s}}}[{RATE}]))", "total")], unit="reqps")
    b.panel("timeseries", "New connections/s by protocol", [
        (f"sum by (protocol) (rate(zcproxy_connections_total{{{s}}}[{RATE}]))", "{{protocol}}")], unit="reqps")
    b.panel("timeseries", "Open connections by protocol", [
        (f"sum by (protocol) (zcproxy_connections_active{{{s}}})", "{{protocol}}")])
    b.row("Throughput and relay")
    b.panel("timeseries", "Throughput by core (both directions)", [
        (f"8 * sum by (instance, core) (rate(zcproxy_bytes_client_to_upstream_total{{{s}}}[{RATE}]) + rate(zcproxy_bytes_upstream_to_client_total{{{s}}}[{RATE}]))", "{{instance}} core {{core}}"),
        (f"8 * sum(rate(zcproxy_bytes_client_to_upstream_total{{{s}}}[{RATE}]) + rate(zcproxy_bytes_upstream_to_client_total{{{s}}}[{RATE}]))", "total")], unit="bps")
    b.panel("timeseries", "Splice vs copy", [
        (f"8 * sum by (core) (rate(zcproxy_splice_bytes_total{{{s}}}[{RATE}]))", "splice core {{core}}"),
        (f"8 * sum by (core) (rate(zcproxy_ktls_bytes_total{{{s}}}[{RATE}]))", "kTLS splice core {{core}}"),
        (f"8 * sum by (core) (rate(zcproxy_copy_bytes_total{{{s}}}[{RATE}]))", "copy core {{core}}")], unit="bps",
        desc="Bytes moved with splice(2) between plain sockets, spliced through kernel TLS, and through user space (TLS without kTLS, HTTP/2 and QUIC streams, handshake leftovers, chunked bodies, copy mode).")
    b.panel("timeseries", "Pipes by core", [
        (f"sum by (instance, core) (zcproxy_pipes_in_use{{{s}}})", "in use {{instance}} core {{core}}"),
        (f"sum by (instance, core) (zcproxy_pipes_pooled{{{s}}})", "pooled {{instance}} core {{core}}")])
    b.panel("timeseries", "Upload vs download", [
        (f"8 * sum(rate(zcproxy_bytes_client_to_upstream_total{{{s}}}[{RATE}]))", "client → upstream"),
        (f"8 * sum(rate(zcproxy_bytes_upstream_to_client_total{{{s}}}[{RATE}]))", "upstream → client")], unit="bps")
    b.row("Latency")
    for metric, title in [("zcproxy_handshake_duration_seconds", "Handshake (first byte → tunnel up)"),
                          ("zcproxy_upstream_connect_duration_seconds", "Upstream connect (resolve + TCP)")]:
        b.panel("timeseries", f"{title} p99 by core", [
            (f"histogram_quantile(0.99, sum by (instance, core, le) (rate({metric}_bucket{{{s}}}[{RATE}])))", "p99 {{instance}} core {{core}}"),
            (f"histogram_quantile(0.5, sum by (le) (rate({metric}_bucket{{{s}}}[{RATE}])))", "p50 total"),
            (f"histogram_quantile(0.99, sum by (le) (rate({metric}_bucket{{{s}}}[{RATE}])))", "p99 total")], unit="s")
    b.row("Errors, authentication and policy decisions")
    b.panel("timeseries", "Errors/s by kind", [
        (f"sum by (kind) (rate(zcproxy_errors_total{{{s}}}[{RATE}]))", "{{kind}}")], unit="reqps")
    b.panel("timeseries", "Auth failures, ACL denies, cache hits by core", [
        (f"sum by (core) (rate(zcproxy_auth_failures_total{{{s}}}[{RATE}]))", "auth failures core {{core}}"),
        (f"sum by (core) (rate(zcproxy_acl_denies_total{{{s}}}[{RATE}]))", "ACL denies core {{core}}"),
        (f"sum by (core) (rate(zcproxy_credential_cache_hits_total{{{s}}}[{RATE}]))", "credential cache hits core {{core}}")], unit="reqps")
    b.row("Live policy")
    b.panel("timeseries", "Policy revision by core", [
        (f"max by (instance, core) (zcproxy_policy_revision{{{s}}})", "{{instance}} core {{core}}")],
        desc="Every core should show the same revision within milliseconds of a change.")
    b.panel("timeseries", "Policy age and staleness", [
        (f"max by (instance) (zcproxy_policy_age_seconds{{{s}}})", "age {{instance}}"),
        (f"max by (instance) (zcproxy_policy_stale{{{s}}})", "stale {{instance}}")], unit="s")
    b.panel("timeseries", "Resyncs and events", [
        (f"sum by (reason) (increase(zcproxy_policy_resyncs_total{{{s}}}[{RATE}]))", "resync {{reason}}"),
        (f"sum(increase(zcproxy_policy_resync_failures_total{{{s}}}[{RATE}]))", "resync failures"),
        (f"sum by (outcome) (increase(zcproxy_policy_events_total{{{s}}}[{RATE}]))", "events {{outcome}}")])
    b.panel("timeseries", "Sessions revoked by policy changes", [
        (f"sum by (core) (increase(zcproxy_sessions_revoked_total{{{s}}}[{RATE}]))", "core {{core}}"),
        (f"max by (instance, source) (zcproxy_policy_source{{{s}}}) == 1", "source {{source}} {{instance}}")])
    b.row("QUIC (HTTP/3 CONNECT, CONNECT-UDP)")
    b.panel("timeseries", "QUIC connections by core", [
        (f"sum by (instance, core) (zcproxy_quic_connections_active{{{s}}})", "open core {{core}}"),
        (f"sum by (instance, core) (rate(zcproxy_quic_connections_total{{{s}}}[{RATE}]))", "new/s core {{core}}"),
        (f"sum(rate(zcproxy_quic_handshakes_completed_total{{{s}}}[{RATE}]))", "handshakes completed/s")],
        desc="Open QUIC connections per core, new ones per second, handshakes completed per second.")
    b.panel("timeseries", "QUIC handshake failures/s by reason", [
        (f"sum by (reason) (rate(zcproxy_quic_handshake_failures_total{{{s}}}[{RATE}]))", "{{reason}}")], unit="reqps",
        desc="timeout, tls (an alert: no common ALPN, a rejected certificate), protocol, peer_closed, refused (connection cap or draining).")
    b.panel("timeseries", "HTTP datagrams/s (CONNECT-UDP) by core", [
        (f"sum by (instance, core) (rate(zcproxy_quic_datagrams_received_total{{{s}}}[{RATE}]))", "from clients core {{core}}"),
        (f"sum by (instance, core) (rate(zcproxy_quic_datagrams_sent_total{{{s}}}[{RATE}]))", "to clients core {{core}}"),
        (f"sum by (reason) (rate(zcproxy_quic_datagrams_dropped_total{{{s}}}[{RATE}]))", "dropped: {{reason}}"),
        (f"sum(rate(zcproxy_quic_datagram_send_waits_total{{{s}}}[{RATE}]))", "waits for send room")], unit="pps",
        desc="Datagrams from and to clients per core, those dropped by reason, and waits for room in a connection's datagram buffer.")
    b.panel("timeseries", "QUIC packets/s by core", [
        (f"sum by (instance, core) (rate(zcproxy_quic_packets_received_total{{{s}}}[{RATE}]))", "in core {{core}}"),
        (f"sum by (instance, core) (rate(zcproxy_quic_packets_sent_total{{{s}}}[{RATE}]))", "out core {{core}}"),
        (f"sum(rate(zcproxy_quic_packets_overflowed_total{{{s}}}[{RATE}]))", "socket overflows"),
        (f"sum(rate(zcproxy_quic_packets_stateless_total{{{s}}}[{RATE}]))", "stateless answers"),
        (f"sum(rate(zcproxy_quic_packets_unroutable_total{{{s}}}[{RATE}]))", "unroutable")], unit="pps",
        desc="UDP datagrams read and sent on the QUIC sockets; kernel receive-buffer overflows; packets answered without a connection; packets dropped as unroutable.")
    b.panel("timeseries", "Steering: packets handed between cores, migrations", [
        (f"sum by (instance, core) (rate(zcproxy_quic_packets_handed_over_total{{{s}}}[{RATE}]))", "handed over by core {{core}}"),
        (f"sum by (instance, core) (rate(zcproxy_quic_packets_taken_over_total{{{s}}}[{RATE}]))", "taken over by core {{core}}"),
        (f"sum(rate(zcproxy_quic_migrations_total{{{s}}}[{RATE}]))", "migrations")], unit="pps",
        desc="Non-zero handover means the kernel is not steering by connection ID (the BPF program could not be attached, or quic.kernel_steering is off).")
    b.panel("timeseries", "Offloads and streams", [
        (f"sum by (instance, core) (rate(zcproxy_quic_gro_reads_total{{{s}}}[{RATE}]))", "GRO reads/s core {{core}}"),
        (f"sum by (instance, core) (rate(zcproxy_quic_gso_sends_total{{{s}}}[{RATE}]))", "GSO sends/s core {{core}}"),
        (f"min by (kind) (zcproxy_quic_offload{{{s}}})", "offload on: {{kind}}"),
        (f"sum by (dir) (rate(zcproxy_quic_streams_total{{{s}}}[{RATE}]))", "streams/s {{dir}}"),
        (f"sum by (instance, core) (rate(zcproxy_quic_batched_reads_total{{{s}}}[{RATE}]))", "batched reads/s core {{core}}")],
        desc="Reads that returned several peers' datagrams (recvmmsg), reads and sends that carried several datagrams of one peer (GRO, GSO), whether the cores have them, and streams opened by clients per second.")
    b.row("SOCKS5 UDP (UDP ASSOCIATE)")
    b.panel("timeseries", "UDP associations by core", [
        (f"sum by (instance, core) (zcproxy_connections_active{{{s},protocol=\"socks5_udp\"}})", "open core {{core}}"),
        (f"sum by (instance, core) (rate(zcproxy_connections_total{{{s},protocol=\"socks5_udp\"}}[{RATE}]))", "new/s core {{core}}"),
        (f"sum(rate(zcproxy_socks5_udp_refused_total{{{s}}}[{RATE}]))", "refused/s (limits)"),
        (f"sum(rate(zcproxy_socks5_udp_flows_opened_total{{{s}}}[{RATE}]))", "destinations opened/s"),
        (f"sum(rate(zcproxy_socks5_udp_flows_revoked_total{{{s}}}[{RATE}]))", "destinations revoked/s")],
        desc="Open associations per core (each lives as long as its TCP control connection), new ones per second, refusals by the per-core and per-user limits, destinations opened and revoked by policy changes.")
    b.panel("timeseries", "SOCKS5 UDP datagrams/s by core and direction", [
        (f"sum by (instance, core, direction) (rate(zcproxy_socks5_udp_datagrams_total{{{s}}}[{RATE}]))", "{{direction}} core {{core}}"),
        (f"sum by (reason) (rate(zcproxy_socks5_udp_dropped_total{{{s}}}[{RATE}]))", "dropped: {{reason}}")], unit="pps",
        desc="Datagrams relayed each way, and those dropped by reason (foreign_source, fragment, malformed, too_large, denied, resolve, destination_limit, unsolicited, socket buffers full, ...).")
    b.panel("timeseries", "SOCKS5 UDP payload throughput", [
        (f"sum by (direction) (rate(zcproxy_socks5_udp_bytes_total{{{s}}}[{RATE}])) * 8", "{{direction}}")], unit="bps",
        desc="Payload bits per second each way, without SOCKS headers.")
    b.row("TLS to the proxy (TCP)")
    b.panel("timeseries", "TLS handshakes/s by result", [
        (f"sum by (result) (rate(zcproxy_tls_handshakes_total{{{s}}}[{RATE}]))", "{{result}}"),
        (f"sum(rate(zcproxy_tls_resumed_total{{{s}}}[{RATE}]))", "resumed")], unit="reqps",
        desc="TLS handshakes on the TCP port: ok, tls_error (an alert sent), eof, timeout, io, not_client_hello; and how many resumed a session.")
    b.panel("timeseries", "TLS sessions/s by version and ALPN", [
        (f"sum by (version, alpn) (rate(zcproxy_tls_sessions_total{{{s}}}[{RATE}]))", "TLS {{version}} {{alpn}}"),
        (f"histogram_quantile(0.99, sum by (le) (rate(zcproxy_tls_handshake_duration_seconds_bucket{{{s}}}[{RATE}])))", "p99 handshake (s)")],
        desc="Completed handshakes by protocol version and ALPN, and the 99th percentile handshake time.")
    b.panel("timeseries", "Kernel TLS hand-overs/s by result", [
        (f"sum by (result) (rate(zcproxy_ktls_handovers_total{{{s}}}[{RATE}]))", "{{result}}"),
        (f"max(zcproxy_ktls_available{{{s}}})", "kTLS available")], unit="reqps",
        desc="Tunnels inside TLS handed to kernel TLS (done) or kept in user space and why: buffered (tunnel bytes already read), cipher, not_extractable, ulp_refused, lost (keys refused after leaving rustls).")
    b.row("HTTP/2 to the proxy")
    b.panel("timeseries", "HTTP/2 connections and streams", [
        (f"sum(zcproxy_h2_connections_active{{{s}}})", "connections"),
        (f"sum(zcproxy_h2_streams_active{{{s}}})", "streams")],
        desc="HTTP/2 connections open and the streams (CONNECT tunnels, CONNECT-UDP flows) they carry.")
    b.panel("timeseries", "HTTP/2 streams/s by kind, resets/s by side", [
        (f"sum by (kind) (rate(zcproxy_h2_streams_total{{{s}}}[{RATE}]))", "{{kind}}"),
        (f"sum by (by) (rate(zcproxy_h2_resets_total{{{s}}}[{RATE}]))", "reset by {{by}}")], unit="reqps",
        desc="Streams opened by what they asked for, and streams reset before their end by the client or the proxy.")
    b.panel("timeseries", "HTTP/2 connections ended by errors/s", [
        (f"sum by (reason) (rate(zcproxy_h2_connections_ended_total{{{s}}}[{RATE}]))", "{{reason}}")], unit="reqps",
        desc="protocol_error, rapid_reset (the proxy's watch), flood (h2's own ENHANCE_YOUR_CALM limits), io, idle (a GOAWAY for idleness the client never acknowledged). A rise in rapid_reset or flood is an attack on the HTTP/2 port.")
    b.row("Bounds of the multiplexed paths (HTTP/2 and HTTP/3) and name resolution")
    b.panel("timeseries", "Tunnel buffer committed per core", [
        (f"zcproxy_tunnel_buffer_committed_bytes{{{s}}}", "core {{core}}")], unit="bytes",
        desc="What HTTP/2 and HTTP/3 tunnel streams may make each core hold: their receive windows plus a read buffer each, at most twice the connection window per connection. Streams past limits.tunnel_buffer_per_core are refused.")
    b.panel("timeseries", "Streams refused by the budget/s, idle HTTP/3 closes/s", [
        (f"sum(rate(zcproxy_tunnel_buffer_refusals_total{{{s}}}[{RATE}]))", "refused (budget)"),
        (f"sum(rate(zcproxy_quic_idle_closes_total{{{s}}}[{RATE}]))", "HTTP/3 closed idle")], unit="reqps",
        desc="Refusals mean the core's budget is spent: clients retry (REFUSED_STREAM, H3_REQUEST_REJECTED). Raise limits.tunnel_buffer_per_core, or lower the windows.")
    b.panel("timeseries", "Names being resolved", [
        (f"max(zcproxy_resolver_in_flight{{{s}}})", "in flight")],
        desc="Host names the resolver thread is resolving for all cores (at most resolver.max_in_flight). A plateau at the limit: the DNS servers are not answering.")
    b.panel("timeseries", "CONNECT-UDP datagrams/s over HTTP/2", [
        (f"sum(rate(zcproxy_h2_datagrams_received_total{{{s}}}[{RATE}]))", "from clients"),
        (f"sum(rate(zcproxy_h2_datagrams_sent_total{{{s}}}[{RATE}]))", "to clients"),
        (f"sum by (reason) (rate(zcproxy_h2_datagrams_dropped_total{{{s}}}[{RATE}]))", "dropped: {{reason}}")], unit="pps",
        desc="DATAGRAM capsules of CONNECT-UDP flows over HTTP/2 (HTTP/3's are in the QUIC row).")
    b.row("Packet IO under QUIC (socket, AF_XDP, PF_RING ZC)")
    b.panel("timeseries", "Frames/s by core, backend and direction", [
        (f"sum by (core, backend, direction) (rate(zcproxy_packet_io_frames_total{{{s}}}[{RATE}]))", "core {{core}} {{backend}} {{direction}}")], unit="pps",
        desc="Datagrams each core's packet IO moved. zcproxy_packet_io_backend says which backend runs, and whether it is the socket fallback of another (quic.af_xdp.fallback).")
    b.panel("timeseries", "Frames per batch", [
        (f"sum by (direction) (rate(zcproxy_packet_io_frames_total{{{s}}}[{RATE}])) / sum by (direction) (rate(zcproxy_packet_io_batches_total{{{s}}}[{RATE}]))", "{{direction}}")],
        desc="What one receive batch or send call carries: near 1 means a syscall or ring pass per packet.")
    b.panel("timeseries", "Drops/s below the endpoint by reason", [
        (f"sum by (backend, reason) (rate(zcproxy_packet_io_drops_total{{{s}}}[{RATE}]))", "{{backend}} {{reason}}")], unit="pps",
        desc="overflow: the socket buffer was full; malformed/fragment/extension_header: frames an XDP queue delivered that are no QUIC datagram; no_frame: no UMEM frame to send from; no_route: no MAC known for the destination.")
    b.panel("timeseries", "Ring events/s (AF_XDP)", [
        (f"sum by (event) (rate(zcproxy_packet_io_ring_events_total{{{s}}}[{RATE}]))", "{{event}}")], unit="ops",
        desc="fill_starved: the kernel had no frame to receive into (raise quic.af_xdp.frames); tx_full: a send found every send frame in flight and waited (raise quic.af_xdp.frames if it keeps rising); tx_completed: frames the NIC sent; wakeups: syscalls made because the driver asked for them (need_wakeup).")
    b.panel("timeseries", "XDP program verdicts/s", [
        (f"sum by (reason) (rate(zcproxy_xdp_verdicts_total{{{s}}}[{RATE}]))", "{{reason}}")], unit="pps",
        desc="What the XDP program on quic.af_xdp.interface did with each frame: redirected to a core's AF_XDP socket, or passed to the kernel (ARP, TCP, other ports, fragments, IPv6 extension headers, cut-off headers).")
    b.panel("timeseries", "QUIC packets handed between cores/s", [
        (f"sum(rate(zcproxy_quic_packets_handed_over_total{{{s}}}[{RATE}]))", "handed over")], unit="pps",
        desc="Packets a core read for a connection another core owns (NIC RSS spreads by address and port, not by connection ID), passed on through the hand-over queue.")
    return b.json([query_var("instance", "Proxy", "zcproxy_cores")])


def controlplane():
    s = 'instance=~"$instance"'
    b = Board("zcproxy-controlplane", "zcproxy / control plane", ["zcproxy"])
    b.row("API")
    b.panel("timeseries", "Requests/s by route and status", [
        (f"sum by (route, status) (rate(zcproxy_control_http_requests_total{{{s}}}[{RATE}]))", "{{route}} {{status}}")], unit="reqps")
    b.panel("timeseries", "Request latency p99 by route", [
        (f"histogram_quantile(0.99, sum by (route, le) (rate(zcproxy_control_http_request_duration_seconds_bucket{{{s}}}[{RATE}])))", "{{route}}")], unit="s")
    b.panel("timeseries", "Error responses/s (4xx, 5xx)", [
        (f'sum by (status) (rate(zcproxy_control_http_requests_total{{{s},status=~"[45].."}}[{RATE}]))', "{{status}}")], unit="reqps")
    b.row("Outbox and publishing")
    b.panel("timeseries", "Outbox backlog", [
        (f"max by (instance) (zcproxy_control_outbox_backlog{{{s}}})", "{{instance}}")],
        desc="Committed changes not yet acknowledged by JetStream; grows while NATS is down.")
    b.panel("timeseries", "Events published and failures/s", [
        (f"sum(rate(zcproxy_control_events_published_total{{{s}}}[{RATE}]))", "published"),
        (f"sum(rate(zcproxy_control_publish_failures_total{{{s}}}[{RATE}]))", "failures")], unit="reqps")
    b.panel("timeseries", "Publish latency (commit → JetStream ack)", [
        (f"histogram_quantile(0.5, sum by (le) (rate(zcproxy_control_publish_latency_seconds_bucket{{{s}}}[{RATE}])))", "p50"),
        (f"histogram_quantile(0.99, sum by (le) (rate(zcproxy_control_publish_latency_seconds_bucket{{{s}}}[{RATE}])))", "p99")], unit="s")
    return b.json([query_var("instance", "Control plane", "zcproxy_control_outbox_backlog")])


if __name__ == "__main__":
    import sys
    out = pathlib.Path(__file__).parent / "dashboards"
    if len(sys.argv) == 3 and sys.argv[1] == "--out":
        out = pathlib.Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    for name, board in [("zcproxy-dataplane", dataplane()), ("zcproxy-controlplane", controlplane())]:
        (out / f"{name}.json").write_text(json.dumps(board, indent=2, ensure_ascii=False) + "\n")
