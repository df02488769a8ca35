#!/usr/bin/env python3
"""Writes a small but valid OCI image layout (one image: config + N gzip layers) for tests and the
demo, with no network and no container tools: make-oci-layout.py DIR [--name NAME] [--layers N]
[--layer-mib M] [--seed S]. The same arguments always give the same digests."""
import argparse, gzip, hashlib, io, json, os, random, tarfile

def blob(root, data):
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(root, "blobs", "sha256", d), "wb") as f:
        f.write(data)
    return "sha256:" + d, len(data)

def layer(rng, index, mib):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i in range(4):
            body = rng.randbytes(mib * 1024 * 1024 // 4)
            info = tarfile.TarInfo(f"layer{index}/file{i}.bin")
            info.size, info.mtime, info.mode = len(body), 0, 0o644
            tar.addfile(info, io.BytesIO(body))
    plain = raw.getvalue()
    packed = io.BytesIO()
    with gzip.GzipFile(fileobj=packed, mode="wb", mtime=0) as gz:
        gz.write(plain)
    return packed.getvalue(), "sha256:" + hashlib.sha256(plain).hexdigest()

def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("dir")
    ap.add_argument("--name", default="gquic/sample:1.0")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--layer-mib", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    os.makedirs(os.path.join(a.dir, "blobs", "sha256"), exist_ok=True)
    layers, diff_ids = [], []
    for i in range(a.layers):
        data, diff = layer(rng, i, a.layer_mib)
        d, n = blob(a.dir, data)
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": n})
        diff_ids.append(diff)
    config = {"architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z",
              "config": {"Cmd": ["/bin/sh"]}, "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    cd, cn = blob(a.dir, json.dumps(config, sort_keys=True).encode())
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
                "layers": layers}
    md, mn = blob(a.dir, json.dumps(manifest, sort_keys=True).encode())
    index = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": md, "size": mn, "annotations": {"org.opencontainers.image.ref.name": a.name}}]}
    with open(os.path.join(a.dir, "index.json"), "w") as f:
        json.dump(index, f, sort_keys=True)
    with open(os.path.join(a.dir, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    print(md)

if __name__ == "__main__":
    main()
