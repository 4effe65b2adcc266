#!/usr/bin/env python3
# status-monitor.py REPLCTL CTL OUT STOPFILE: `replctl status --json` every 0.1 s into OUT,
# one JSON document per line with "t" = seconds since start and "mono" = time.monotonic()
# when the reply came, until STOPFILE exists.
import json, os, subprocess, sys, time
replctl, ctl, out, stop = sys.argv[1:5]
t0 = time.monotonic()
with open(out, "w") as f:
    while not os.path.exists(stop):
        p = subprocess.run([replctl, "-s", ctl, "status", "--json"], capture_output=True)
        if p.returncode == 0:
            try:
                j = json.loads(p.stdout); j["mono"] = time.monotonic(); j["t"] = round(j["mono"] - t0, 2)
                f.write(json.dumps(j) + "\n"); f.flush()
            except ValueError:
                pass
        time.sleep(0.1)
