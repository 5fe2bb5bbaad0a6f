"""An external worker for `plover worker`: copies the entries of a JSON Lines file (one
{"key", "value"} per line) into files of a directory, one per key, resuming from its
checkpoint (the number of lines done). Rollback removes the files. Parameters: `source`,
`target_dir`, `delay_ms` (a pause per entry, so a test can kill it midway), `every` (lines
per checkpoint)."""

import json
import os
import sys
import time


def say(**line):
    print(json.dumps(line), flush=True)


def main():
    task = json.loads(sys.stdin.readline())
    params = task["spec"]["parameters"]
    target = params["target_dir"]
    with open(params["source"]) as f:
        entries = [json.loads(line) for line in f if line.strip()]
    if task["kind"] == "rollback":
        removed = 0
        for e in entries:
            path = os.path.join(target, e["key"])
            if os.path.exists(path):
                os.remove(path)
                removed += 1
        say(complete={"summary": f"removed {removed} files"})
        return
    start = int(task.get("checkpoint") or 0)
    every = int(params.get("every", 50))
    delay = float(params.get("delay_ms", 0)) / 1000.0
    say(log=f"attempt {task['attempt']} starts at line {start} of {len(entries)}")
    for i in range(start, len(entries)):
        e = entries[i]
        tmp = os.path.join(target, "." + e["key"] + ".tmp")
        with open(tmp, "w") as f:
            f.write(e["value"])
        os.replace(tmp, os.path.join(target, e["key"]))
        say(object={"name": e["key"], "status": "success"})
        if (i + 1) % every == 0:
            say(progress={"done": i + 1, "total": len(entries)})
            say(checkpoint=str(i + 1))
        if delay:
            time.sleep(delay)
    say(complete={"summary": f"copied {len(entries) - start} files from line {start}"})


if __name__ == "__main__":
    main()
