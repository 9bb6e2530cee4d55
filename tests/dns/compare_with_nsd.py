#!/usr/bin/env python3
"""Answer-by-answer comparison of our authoritative DNS server with NSD.

Starts NSD (Debian `nsd`, 4.6) on the same zone files, sends the same set of
queries to both with `dig`, and compares rcode, flags, EDNS, question and the
answer/authority/additional sections (each a sorted multiset of records).

  compare_with_nsd.py --ours 127.0.0.1:5353 --zone-file example.net.zone \
      [--zone-file other.zone ...] [--nsd-address 127.0.0.80] [--nsd-port 10053] \
      [--work DIR] [--extra-names a.example.net,b.example.net] [--allow any edns-size] [-v]

Exit status: 0 no differences (other than --allow'ed kinds), 1 differences,
2 setup error (NSD did not start, bad arguments, ...).

How NSD 4.6.1 behaves with the config this script writes (minimal-responses: yes,
refuse-any: no, hide-version/identity: yes), checked with dig on a test zone:
- NXDOMAIN/NODATA: apex SOA in authority, TTL = min(SOA TTL, SOA MINIMUM); AA set.
- Positive answers: no NS in authority, no additional (minimal-responses: yes). With
  minimal-responses: no it adds the apex NS RRset to authority plus A/AAAA of the NS
  names that are in the same zone.
- NS queries: in-zone glue (A and AAAA) in additional under both settings; no
  additional for NS names in a *different* zone that NSD also serves.
- MX: no additional for the exchange under minimal-responses: yes.
- CNAME: chased inside the zone and into other zones NSD serves, chains followed
  (all CNAMEs + final RRset in answer; NODATA at a target in another zone: that
  zone's SOA in authority); target outside served zones: just the CNAME, NOERROR.
  Dangling in-zone target: NXDOMAIN with the CNAME and the SOA (RFC 6604). Chain to
  NODATA: NOERROR, CNAMEs + SOA. qtype CNAME: the CNAME only, no chase.
- Wildcard: synthesised with the query name as owner (also for deeper names);
  other types at a wildcard name: NODATA with SOA.
- Empty non-terminal (also the parent of a wildcard): NOERROR/NODATA with SOA;
  a name below an existing leaf: NXDOMAIN.
- Delegation below the apex: referral, no AA, NS in authority, glue in additional.
- ANY (UDP and TCP alike): exactly one RRset (RFC 8482 style; the SOA at the apex,
  the A RRset at www, the CNAME at an alias); ENT: NODATA; non-existent: NXDOMAIN.
- Class CH (apex SOA, also version.bind/id.server with hide-*): REFUSED, no AA, no
  records; with EDNS adds EDE 21 (Not Supported).
- Outside all zones: REFUSED, no AA, no records; with EDNS adds EDE 20 (Not
  Authoritative).
- EDNS version 1: BADVERS, no AA, no records, OPT version 0 udp 1232.  (dig needs
  +noednsneg, otherwise it silently retries with version 0.)  DO bit echoed.
- OPT always advertises udp 1232 (ipv4-edns-size), whatever the client sent.
- Truncation, 100 A records (~1.6 KB): over UDP without EDNS, with EDNS 512, with
  EDNS 1232 *and with EDNS 4096* (NSD caps UDP replies at 1232): TC set, AA set, the
  answer RRset dropped entirely (ANSWER: 0, no partial RRset); TCP returns all 100.
- AXFR/IXFR without provide-xfr: REFUSED (no AA), EDE 18 (Prohibited), TCP and UDP.
- Unknown type (TYPE999): NODATA with SOA.  0x20: question and answer owner keep the
  query's case (compression pointer to the question).
"""

import argparse
import collections
import concurrent.futures
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

TYPES = ["A", "AAAA", "NS", "SOA", "CNAME", "MX", "TXT", "ANY"]
DIG_BASE = ["+norec", "+noall", "+comments", "+question", "+answer", "+authority",
            "+additional", "+nocookie", "+time=2", "+tries=1", "+noednsneg",
            "+noidnin", "+noidnout"]
# EDNS variants: (label, dig options). UDP queries use +ignore so a truncated
# reply is compared as such instead of dig retrying over TCP.
NOEDNS = ("noedns", ["+noedns", "+ignore"])
EDNS0 = ("edns0/1232", ["+edns=0", "+bufsize=1232", "+ignore"])
EXTRA_VARIANTS = [
    ("edns0/512", ["+edns=0", "+bufsize=512", "+ignore"]),
    ("edns1", ["+edns=1", "+bufsize=1232", "+ignore"]),
    ("edns0/1232+do", ["+edns=0", "+bufsize=1232", "+dnssec", "+ignore"]),
    ("tcp/edns0", ["+tcp", "+edns=0", "+bufsize=1232"]),
    ("tcp/noedns", ["+tcp", "+noedns"]),
]
# rdata is compared case-insensitively except for types carrying free text.
CASE_SENSITIVE_RDATA = {"TXT", "SPF", "HINFO", "CAA", "NAPTR"}

KINDS = {
    "any": "qtype ANY: ours NOERROR+AA with a non-empty answer made of complete RRsets "
           "that NSD serves at that name (RFC 8482); authority/additional ignored",
    "edns-size": "the UDP payload size advertised in the OPT record differs",
    "ede": "Extended DNS Error options (RFC 8914) differ",
    "tc": "both set TC: the section contents of the truncated replies may differ",
    "additional": "only the additional section differs",
}


def die(msg):
    print("compare_with_nsd: " + msg, file=sys.stderr)
    sys.exit(2)


# ---------------------------------------------------------------------------
# zone files

def absname(name, origin):
    if name == "@":
        return origin
    if not name.endswith("."):
        return name + "." + origin if origin != "." else name + "."
    return name


def parse_zone(path):
    """Returns (origin, records); records are (owner, ttl, class, type, rdata)."""
    origin = None
    default_ttl = None
    records = []
    last_owner = None
    with open(path) as f:
        lines = f.read().splitlines()
    pending = ""
    for raw in lines:
        line = strip_comment(raw)
        if pending:
            line = pending + " " + line
            pending = ""
        if line.count("(") > line.count(")"):
            pending = line
            continue
        line = line.replace("(", " ").replace(")", " ")
        if not line.strip():
            continue
        toks = line.split()
        if toks[0] == "$ORIGIN":
            origin = toks[1].lower()
            if not origin.endswith("."):
                origin += "."
            continue
        if toks[0] == "$TTL":
            default_ttl = int(toks[1])
            continue
        if toks[0].startswith("$"):
            die("%s: unsupported directive %s" % (path, toks[0]))
        if raw[:1] in (" ", "\t"):
            owner = last_owner
        else:
            owner = absname(toks.pop(0), origin or ".").lower()
        last_owner = owner
        ttl, cls = default_ttl, "IN"
        while toks and (toks[0].isdigit() or toks[0].upper() in ("IN", "CH", "HS")):
            t = toks.pop(0)
            if t.isdigit():
                ttl = int(t)
            else:
                cls = t.upper()
        if not toks:
            die("%s: cannot parse line: %s" % (path, raw))
        rtype = toks[0].upper()
        records.append((owner, ttl, cls, rtype, " ".join(toks[1:])))
    if origin is None:
        soa = [r for r in records if r[3] == "SOA"]
        if not soa:
            die("%s: no $ORIGIN and no SOA" % path)
        origin = soa[0][0]
    if not any(r[3] == "SOA" and r[0] == origin for r in records):
        die("%s: no SOA at the origin %s" % (path, origin))
    return origin, records


def strip_comment(line):
    out, inq, esc = [], False, False
    for ch in line:
        if esc:
            esc = False
        elif ch == "\\":
            esc = True
        elif ch == '"':
            inq = not inq
        elif ch == ";" and not inq:
            break
        out.append(ch)
    return "".join(out)


def labels(name):
    return [l for l in name.rstrip(".").split(".") if l] if name != "." else []


def is_under(name, apex):
    return name == apex or name.endswith("." + apex) or apex == "."


def mixed_case(name):
    out, up = [], True
    for ch in name:
        if ch.isalpha():
            out.append(ch.upper() if up else ch.lower())
            up = not up
        else:
            out.append(ch)
    return "".join(out)


# ---------------------------------------------------------------------------
# queries

class Query:
    def __init__(self, name, qtype, qclass, variant, note=""):
        self.name, self.qtype, self.qclass = name, qtype, qclass
        self.vlabel, self.vopts = variant
        self.note = note

    def label(self):
        s = "%s %s %s [%s]" % (self.name, self.qclass, self.qtype, self.vlabel)
        return s + (" (%s)" % self.note if self.note else "")

    def key(self):
        return (self.name.lower(), self.qtype, self.qclass, self.vlabel)


def build_queries(zones, extra_names, rnd):
    """zones: list of (apex, records)."""
    queries = []
    seen = set()

    def add(name, qtype, qclass="IN", variants=(NOEDNS, EDNS0), note=""):
        for v in variants:
            q = Query(name, qtype, qclass, v, note)
            k = (name, qtype, qclass, v[0])
            if k not in seen:
                seen.add(k)
                queries.append(q)

    def add_all_types(name, note=""):
        for t in TYPES:
            add(name, t, note=note)

    apexes = [a for a, _ in zones]
    for apex, records in zones:
        owners = []
        for r in records:
            if r[0] not in owners:
                owners.append(r[0])
        owner_set = set(owners)
        # empty non-terminals between owners and the apex
        ents = []
        for o in owners:
            ls = labels(o)
            for i in range(1, len(ls) - len(labels(apex))):
                anc = ".".join(ls[i:]) + "."
                if anc not in owner_set and anc not in ents:
                    ents.append(anc)
        for o in owners:
            add_all_types(o)
        for e in ents:
            add_all_types(e, "empty non-terminal")
        tag = "%06x" % rnd.getrandbits(24)
        nx = "nx-%s.%s" % (tag, apex)
        add_all_types(nx, "non-existent")
        wild_samples = []
        for o in owners:
            if o.startswith("*."):
                parent = o[2:]
                sample = "foo." + parent
                if sample in owner_set:
                    sample = "foo-%s.%s" % (tag, parent)
                wild_samples.append(sample)
                add_all_types(sample, "wildcard")
                add("a.b." + sample, "A", note="wildcard, deeper")
        cuts = {r[0] for r in records if r[3] == "NS" and r[0] != apex}
        plain = [o for o in owners if "*" not in o
                 and not any(o != c and is_under(o, c) for c in cuts)]
        deepest = max(plain, key=lambda o: len(labels(o)))
        add("nx-%s.%s" % (tag, deepest), "A", note="below an existing name")
        add("nx-%s.%s" % (tag, deepest), "TXT", note="below an existing name")
        # 0x20 and class CH
        mc = mixed_case(apex)
        for t in ("SOA", "NS", "A"):
            add(mc, t, note="0x20")
        add(apex, "SOA", "CH", note="class CH")
        add(apex, "TYPE65280", note="unknown type")
        # a few queries with the other EDNS / transport variants
        few = [(apex, "SOA"), (apex, "NS"), (apex, "ANY"), (nx, "A")]
        a_owner = next((r[0] for r in records if r[3] == "A" and r[0] != apex
                        and "*" not in r[0]), None)
        if a_owner:
            few.append((a_owner, "A"))
        sizes = collections.Counter((r[0], r[3]) for r in records)
        (big_owner, big_type), n = sizes.most_common(1)[0]
        if n > 1 and (big_owner, big_type) not in few:
            few.append((big_owner, big_type))
        if wild_samples:
            few.append((wild_samples[0], "A"))
        for name, t in few:
            add(name, t, variants=EXTRA_VARIANTS)
        add(mc, "A", variants=[EXTRA_VARIANTS[3]], note="0x20")
    for n in extra_names:
        add_all_types(n, "extra")
    outside = "outside-%06x.invalid." % rnd.getrandbits(24)
    add(outside, "A", note="outside all zones")
    add(outside, "SOA", variants=[EXTRA_VARIANTS[3]], note="outside all zones")
    for apex in apexes:
        ls = labels(apex)
        if len(ls) > 1:
            parent = ".".join(ls[1:]) + "."
            if not any(is_under(parent, a) for a in apexes):
                add(parent, "SOA", note="parent of a zone, not served")
    return queries


# ---------------------------------------------------------------------------
# dig

def dig_args(query):
    return ["-q", query.name, "-t", query.qtype, "-c", query.qclass] + query.vopts


def run_dig(server, query):
    host, port = server
    cmd = ["dig", "@" + host, "-p", str(port)] + DIG_BASE + dig_args(query)
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=15, text=True)
        out = p.stdout
    except subprocess.TimeoutExpired:
        out = ";; dig timed out"
    return parse_dig(out)


def split_blocks(out):
    """Splits the output of one dig run with several queries into one block per
    query: a reply starts with ';; Got answer:', a failed query ends with
    ';; no servers could be reached'."""
    blocks, cur, has_reply = [], [], False
    for line in out.splitlines():
        if line.startswith(";; Got answer:"):
            if has_reply:
                blocks.append(cur)
                cur = []
            has_reply = True
        cur.append(line)
        if "no servers could be reached" in line:
            blocks.append(cur)
            cur, has_reply = [], False
    if cur and (has_reply or any(l.strip() for l in cur)):
        blocks.append(cur)
    return ["\n".join(b) for b in blocks]


def question_matches(res, query):
    if not res["question"]:
        return res["error"] is not None  # FORMERR-like replies are re-checked alone
    want = "%s %s %s" % (query.name, query.qclass, query.qtype)
    return res["question"][0].lower() == want.lower()


def run_dig_batch(server, queries):
    """One dig process for several queries (dig start-up dominates otherwise); any
    query whose block cannot be attributed with certainty is re-run on its own."""
    host, port = server
    cmd = ["dig", "@" + host, "-p", str(port)] + DIG_BASE
    for q in queries:
        cmd += dig_args(q)
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=15 + 3 * len(queries), text=True)
        blocks = split_blocks(p.stdout)
    except subprocess.TimeoutExpired:
        blocks = []
    if len(blocks) != len(queries):
        return [run_dig(server, q) for q in queries]
    results = []
    for q, b in zip(queries, blocks):
        r = parse_dig(b)
        if r["warnings"] or not question_matches(r, q):
            r = run_dig(server, q)
        results.append(r)
    return results


def parse_record(line):
    parts = line.split(None, 4)
    if len(parts) < 4:
        return ("?", line)
    owner, ttl, cls, rtype = parts[:4]
    rdata = " ".join(parts[4].split()) if len(parts) > 4 else ""
    if rtype.upper() not in CASE_SENSITIVE_RDATA:
        rdata = rdata.lower()
    return (owner.lower(), ttl, cls, rtype, rdata)


def parse_dig(out):
    r = {"error": None, "status": None, "opcode": None, "flags": (), "counts": None,
         "edns": None, "udp": None, "ede": (), "options": (), "question": (),
         "answer": (), "authority": (), "additional": (), "warnings": (), "raw": out}
    sections = {"answer": [], "authority": [], "additional": [], "question": []}
    ede, options, warnings = [], [], []
    cur = None
    for line in out.splitlines():
        s = line.strip()
        if not s:
            continue
        if s.startswith(";; ->>HEADER<<-"):
            for part in s[len(";; ->>HEADER<<-"):].split(","):
                k, _, v = part.partition(":")
                if k.strip() == "status":
                    r["status"] = v.strip()
                elif k.strip() == "opcode":
                    r["opcode"] = v.strip()
        elif s.startswith(";; flags:"):
            fl, _, counts = s[len(";; flags:"):].partition(";")
            r["flags"] = tuple(sorted(fl.split()))
            r["counts"] = counts.strip()
        elif s == ";; OPT PSEUDOSECTION:":
            cur = "opt"
        elif s.startswith(";; QUESTION SECTION"):
            cur = "question"
        elif s.startswith(";; ANSWER SECTION"):
            cur = "answer"
        elif s.startswith(";; AUTHORITY SECTION"):
            cur = "authority"
        elif s.startswith(";; ADDITIONAL SECTION"):
            cur = "additional"
        elif s.startswith("; EDNS:"):
            # "; EDNS: version: 0, flags: do; udp: 1232"  (maybe "MBZ: 0x..;")
            body = s[len("; EDNS:"):]
            ver, flags, udp, mbz = None, "", None, None
            for part in body.split(";"):
                part = part.strip()
                if part.startswith("version:"):
                    v, _, f = part.partition(",")
                    ver = v.split(":", 1)[1].strip()
                    flags = f.partition(":")[2].strip()
                elif part.startswith("udp:"):
                    udp = part.split(":", 1)[1].strip()
                elif part.startswith("MBZ:"):
                    mbz = part
                elif part.startswith("flags:"):
                    flags = part.split(":", 1)[1].strip()
            r["edns"] = "version %s, flags [%s]%s" % (ver, " ".join(sorted(flags.split())),
                                                     ", " + mbz if mbz else "")
            r["udp"] = udp
        elif cur == "opt" and s.startswith("; EDE:"):
            ede.append(s[len("; EDE:"):].strip())
        elif cur == "opt" and s.startswith("; ") and not s.startswith(";;"):
            options.append(s[2:])
        elif s.startswith(";; Got answer"):
            pass
        elif s.startswith(";; communications error") or s.startswith(";; connection timed out") \
                or s.startswith(";; no servers could be reached") or s.startswith(";; dig timed out") \
                or (s.startswith(";; Connection to") and "failed" in s):
            r["error"] = r["error"] or s[3:]
        elif s.startswith(";; Warning") or s.startswith(";; WARNING") or s.startswith(";; ERROR"):
            warnings.append(s[3:])
        elif s.startswith(";;"):
            warnings.append(s[3:])
        elif cur == "question" and s.startswith(";"):
            sections["question"].append(" ".join(s[1:].split()))
        elif cur in ("answer", "authority", "additional") and not s.startswith(";"):
            sections[cur].append(parse_record(s))
        elif not s.startswith(";"):
            warnings.append("unexpected line: " + s)
    if r["status"] is None and r["error"] is None:
        r["error"] = "no response parsed"
    if r["status"] is not None:
        r["error"] = None  # e.g. a reply after a first timeout
    for k in ("answer", "authority", "additional"):
        r[k] = tuple(sorted(sections[k]))
    r["question"] = tuple(sections["question"])
    r["ede"] = tuple(sorted(ede))
    r["options"] = tuple(sorted(options))
    r["warnings"] = tuple(warnings)
    return r


# ---------------------------------------------------------------------------
# comparison

FIELDS = ["error", "status", "opcode", "flags", "question", "edns", "udp", "ede", "options",
          "answer", "authority", "additional", "warnings", "counts"]
SECTIONS = ("answer", "authority", "additional")


def fmt_rec(rec):
    return " ".join(str(x) for x in rec) if isinstance(rec, tuple) else str(rec)


def differing_fields(ours, nsd):
    diffs = [f for f in FIELDS if ours[f] != nsd[f] and f != "counts"]
    if not diffs and ours["counts"] != nsd["counts"]:
        diffs.append("counts")
    return diffs


def any_candidates(query, nsd_results, zone_data):
    """RRsets NSD serves at query.name, for checking an RFC 8482 ANY answer."""
    cands = collections.defaultdict(set)
    name = query.name.lower()
    for t in TYPES:
        res = nsd_results.get((name, t, query.qclass, query.vlabel))
        if res:
            for rec in res["answer"]:
                if len(rec) == 5 and rec[0] == name:
                    cands[(rec[0], rec[3])].add(rec)
    for rec in zone_data.get(name, ()):
        cands[(rec[0], rec[3])].add(rec)
    return cands


def allowed_kinds(query, ours, nsd, diffs, allow, nsd_results, zone_data):
    """Returns the KINDs that explain all of `diffs`, or None."""
    left, used = set(diffs), []
    if "edns-size" in allow and "udp" in left and ours["udp"] and nsd["udp"]:
        left.discard("udp"); used.append("edns-size")
    if "ede" in allow and "ede" in left:
        left.discard("ede"); used.append("ede")
    if "any" in allow and query.qtype == "ANY" and left & set(SECTIONS) \
            and ours["status"] == "NOERROR" and nsd["status"] == "NOERROR" \
            and "aa" in ours["flags"] and ours["answer"] and nsd["answer"]:
        cands = any_candidates(query, nsd_results, zone_data)
        got = collections.defaultdict(set)
        for rec in ours["answer"]:
            got[(rec[0], rec[3]) if len(rec) == 5 else ("?", "?")].add(rec)
        if all(cands.get(k) == v for k, v in got.items()) or \
                (len(got) == 1 and list(got)[0][1] == "HINFO"):
            for f in SECTIONS + ("counts",):
                left.discard(f)
            used.append("any")
    if "tc" in allow and "tc" in ours["flags"] and "tc" in nsd["flags"] and left & set(SECTIONS):
        for f in SECTIONS + ("counts",):
            left.discard(f)
        used.append("tc")
    if "additional" in allow and "additional" in left:
        left.discard("additional"); left.discard("counts"); used.append("additional")
    return used if not left else None


def show_field(f, ours, nsd, out):
    if f in SECTIONS:
        co, cn = collections.Counter(ours[f]), collections.Counter(nsd[f])
        only_o = list((co - cn).elements())
        only_n = list((cn - co).elements())
        for rec in only_o:
            out.append("    %-10s only ours: %s" % (f, fmt_rec(rec)))
        for rec in only_n:
            out.append("    %-10s only nsd:  %s" % (f, fmt_rec(rec)))
    else:
        def v(x):
            if isinstance(x, tuple):
                return "[" + ", ".join(x) + "]"
            return str(x)
        out.append("    %-10s ours: %s" % (f, v(ours[f])))
        out.append("    %-10s nsd:  %s" % ("", v(nsd[f])))


# ---------------------------------------------------------------------------
# NSD

class Nsd:
    def __init__(self, work, addr, port, zones):
        self.work, self.addr, self.port, self.zones = work, addr, port, zones
        self.proc = None
        self.conf = os.path.join(work, "nsd.conf")
        self.log = os.path.join(work, "nsd.log")
        self.out = os.path.join(work, "nsd.stderr")

    def write_conf(self):
        w = self.work
        lines = [
            "server:",
            "    ip-address: %s@%d" % (self.addr, self.port),
            "    port: %d" % self.port,
            '    username: ""',
            '    chroot: ""',
            '    zonesdir: "%s"' % w,
            '    database: ""',
            '    pidfile: "%s"' % os.path.join(w, "nsd.pid"),
            '    xfrdfile: "%s"' % os.path.join(w, "xfrd.state"),
            '    xfrdir: "%s"' % w,
            '    zonelistfile: "%s"' % os.path.join(w, "zone.list"),
            '    logfile: "%s"' % self.log,
            "    server-count: 1",
            "    verbosity: 0",
            "    rrl-ratelimit: 0",
            "    rrl-whitelist-ratelimit: 0",
            "    hide-version: yes",
            "    hide-identity: yes",
            "    minimal-responses: yes",
            "    refuse-any: no",
            "remote-control:",
            "    control-enable: no",
        ]
        for apex, path in self.zones:
            lines += ["zone:", "    name: %s" % apex, '    zonefile: "%s"' % path]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def logs(self):
        text = []
        for p in (self.out, self.log):
            if os.path.exists(p):
                with open(p, errors="replace") as f:
                    text.append("--- %s\n%s" % (p, f.read()))
        return "\n".join(text)

    def start(self, timeout=15):
        for apex, path in self.zones:
            if shutil.which("nsd-checkzone"):
                p = subprocess.run(["nsd-checkzone", apex, path], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
                if p.returncode != 0:
                    raise RuntimeError("nsd-checkzone %s %s failed:\n%s" % (apex, path, p.stdout))
        self.write_conf()
        p = subprocess.run(["nsd-checkconf", self.conf], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        if p.returncode != 0:
            raise RuntimeError("nsd-checkconf failed:\n" + p.stdout)
        probe = Query(self.zones[0][0], "SOA", "IN", ("probe", ["+noedns", "+time=1"]))
        if run_dig((self.addr, self.port), probe)["status"] is not None:
            raise RuntimeError("something already answers on %s#%d" % (self.addr, self.port))
        with open(self.out, "w") as err:
            self.proc = subprocess.Popen(["nsd", "-d", "-c", self.conf], stdin=subprocess.DEVNULL,
                                         stdout=err, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.time() + timeout
        pending = [apex for apex, _ in self.zones]
        while pending:
            if self.proc.poll() is not None:
                raise RuntimeError("nsd exited with status %d" % self.proc.returncode)
            if time.time() > deadline:
                raise RuntimeError("nsd did not answer SOA for %s within %ds"
                                   % (", ".join(pending), timeout))
            q = Query(pending[0], "SOA", "IN", ("probe", ["+noedns", "+time=1"]))
            res = run_dig((self.addr, self.port), q)
            if res["status"] == "NOERROR" and "aa" in res["flags"] and res["answer"]:
                pending.pop(0)
            else:
                time.sleep(0.1)

    def stop(self):
        if not self.proc or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own children only
            except ProcessLookupError:
                pass
            self.proc.wait()


# ---------------------------------------------------------------------------

def hostport(s, default_port=53):
    host, sep, port = s.rpartition(":")
    if not sep:
        return s, default_port
    return host.strip("[]"), int(port)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="KINDs for --allow:\n" + "\n".join(
                                     "  %-11s %s" % kv for kv in KINDS.items()))
    ap.add_argument("--ours", required=True, help="HOST:PORT of the server under test")
    ap.add_argument("--zone-file", action="append", required=True)
    ap.add_argument("--nsd-address", default="127.0.0.80")
    ap.add_argument("--nsd-port", type=int, default=10053)
    ap.add_argument("--work", help="directory for nsd.conf, logs (kept); default a temp dir")
    ap.add_argument("--extra-names", default="", help="comma-separated names to query too")
    ap.add_argument("--allow", action="extend", nargs="+", default=[], metavar="KIND")
    ap.add_argument("--jobs", type=int, default=4, help="parallel dig processes")
    ap.add_argument("--batch", type=int, default=20, help="queries per dig process")
    ap.add_argument("--seed", type=int, help="seed for the random non-existent names")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()

    allow = set()
    for a in args.allow:
        for k in a.split(","):
            if k not in KINDS:
                die("unknown --allow kind %r (known: %s)" % (k, ", ".join(KINDS)))
            allow.add(k)
    if not shutil.which("dig") or not shutil.which("nsd"):
        die("needs dig (bind9-dnsutils) and nsd on PATH")
    ours = hostport(args.ours)

    zones, zone_files, zone_data = [], [], collections.defaultdict(set)
    for path in args.zone_file:
        path = os.path.abspath(path)
        apex, records = parse_zone(path)
        if apex in [a for a, _ in zones]:
            die("zone %s given twice" % apex)
        zones.append((apex, records))
        zone_files.append((apex, path))
        for owner, ttl, cls, rtype, rdata in records:
            if rtype.upper() not in CASE_SENSITIVE_RDATA:
                rdata = rdata.lower()
            zone_data[owner].add((owner, str(ttl), cls, rtype, " ".join(rdata.split())))
    extra = []
    for n in args.extra_names.split(","):
        n = n.strip()
        if n:
            extra.append(n if n.endswith(".") else n + ".")

    rnd = random.Random(args.seed)
    queries = build_queries(zones, extra, rnd)

    own_work = args.work is None
    work = tempfile.mkdtemp(prefix="compare-nsd.") if own_work else os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    nsd = Nsd(work, args.nsd_address, args.nsd_port, zone_files)

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)  # also when started in the background

    try:
        try:
            nsd.start()
        except RuntimeError as e:
            print("compare_with_nsd: NSD failed to start: %s" % e, file=sys.stderr)
            print(nsd.logs(), file=sys.stderr)
            return 2
        nsd_server = (args.nsd_address, args.nsd_port)
        probe = Query(zones[0][0], "SOA", "IN", ("probe", ["+noedns", "+time=2"]))
        res = run_dig(ours, probe)
        if res["error"]:
            print("compare_with_nsd: %s#%d does not answer (%s)" % (ours[0], ours[1], res["error"]),
                  file=sys.stderr)
            return 2

        def both(batch):
            return list(zip(run_dig_batch(ours, batch), run_dig_batch(nsd_server, batch)))
        batches = [queries[i:i + args.batch] for i in range(0, len(queries), args.batch)]
        results = []
        ex = concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs)
        try:
            for part in ex.map(both, batches):
                results += part
        finally:
            ex.shutdown(wait=False, cancel_futures=True)
        if nsd.proc.poll() is not None:
            print("compare_with_nsd: NSD died during the run", file=sys.stderr)
            print(nsd.logs(), file=sys.stderr)
            return 2
        nsd_results = {q.key(): r[1] for q, r in zip(queries, results)}
        nsd_errors = sum(1 for _, n in results if n["error"])
        identical = allowed = different = 0
        by_kind = collections.Counter()
        for q, (o, n) in zip(queries, results):
            diffs = differing_fields(o, n)
            if not diffs:
                identical += 1
                if args.verbose:
                    print("same     %s: %s %s" % (q.label(), n["status"], n["counts"]))
                continue
            kinds = allowed_kinds(q, o, n, diffs, allow, nsd_results, zone_data)
            lines = []
            if kinds is not None:
                allowed += 1
                by_kind.update(kinds)
                if not args.verbose:
                    continue
                lines.append("ALLOWED (%s) %s" % (",".join(kinds), q.label()))
            else:
                different += 1
                lines.append("DIFF     %s" % q.label())
            for f in diffs:
                show_field(f, o, n, lines)
            print("\n".join(lines))
        if nsd_errors:
            print("warning: NSD gave no answer to %d queries; its log:" % nsd_errors)
            print(nsd.logs())
        summary = "compared %d queries: %d identical, %d allowed differences, %d differences" % (
            len(queries), identical, allowed, different)
        if by_kind:
            summary += " (allowed: %s)" % ", ".join("%s %d" % kv for kv in sorted(by_kind.items()))
        print(summary)
        return 1 if different else 0
    except KeyboardInterrupt:
        print("compare_with_nsd: interrupted", file=sys.stderr)
        return 2
    finally:
        nsd.stop()
        if own_work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
