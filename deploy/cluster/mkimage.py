#!/usr/bin/env python3
"""Write a one-layer container image as a `docker save` archive, without Docker.

    mkimage.py OUT.tar NAME:TAG --file SRC=/DEST[:MODE] ... [--entrypoint /bin] [--user UID]

containerd imports the archive (`ctr -n k8s.io images import OUT.tar`). Used by
deploy/cluster.sh for the images of the cluster itself (pause, CoreDNS, metrics-server):
static binaries, nothing else in the image. Deterministic: fixed timestamps and owners, so
the same inputs give the same image id.
"""
import argparse
import hashlib
import io
import json
import sys
import tarfile


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("ref", help="repository:tag the image is imported as")
    p.add_argument("--file", action="append", default=[], help="SRC=/DEST[:MODE] (octal mode, default 0755)")
    p.add_argument("--entrypoint", action="append", default=[], help="entrypoint argv, one flag per word")
    p.add_argument("--user", default="")
    a = p.parse_args()
    if ":" not in a.ref.rsplit("/", 1)[-1]:
        p.error(f"image reference {a.ref!r} has no tag")

    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.PAX_FORMAT) as layer:
        dirs = set()
        for spec in a.file:
            if "=" not in spec:
                p.error(f"--file {spec!r}: expected SRC=/DEST[:MODE]")
            src, dest = spec.split("=", 1)
            mode = 0o755
            if ":" in dest:
                dest, m = dest.rsplit(":", 1)
                mode = int(m, 8)
            if not dest.startswith("/"):
                p.error(f"--file {spec!r}: destination must be absolute")
            parts = dest.strip("/").split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    ti = tarfile.TarInfo(d)
                    ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 0
                    layer.addfile(ti)
            try:
                data = open(src, "rb").read()
            except OSError as e:
                print(f"mkimage: cannot read {src}: {e}", file=sys.stderr)
                return 1
            ti = tarfile.TarInfo(dest.strip("/"))
            ti.size, ti.mode, ti.mtime = len(data), mode, 0
            layer.addfile(ti, io.BytesIO(data))
    layer_bytes = layer_buf.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()

    config = {
        "architecture": "amd64" if sys.maxsize > 2**32 else "386",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {"Entrypoint": a.entrypoint or None, "User": a.user,
                   "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "deploy/cluster/mkimage.py"}],
    }
    import platform
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    config["architecture"] = arch
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    layer_name = diff_id.split(":")[1] + "/layer.tar"
    manifest = [{"Config": config_name, "RepoTags": [a.ref], "Layers": [layer_name]}]

    with tarfile.open(a.out, mode="w", format=tarfile.PAX_FORMAT) as out:
        for name, data in ((config_name, config_bytes), (layer_name, layer_bytes),
                           ("manifest.json", json.dumps(manifest).encode())):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), 0o644, 0
            out.addfile(ti, io.BytesIO(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
