"""`d2p` command line: eval, prune. Bad input: one line on stderr, exit status 2, nothing written."""
from __future__ import annotations

import argparse
import sys
import time

from .assets import AssetError
from .checks import InputError
from .data import DataError
from .zeroshot import TaskError
from .models import ModelError
from .prune.engine import PruneError


class UsageError(ValueError):
    """Invalid combination of options."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage dump
        print(f"d2p: error: {message} (see `d2p {self.prog.split()[-1]} --help`)", file=sys.stderr)
        sys.exit(2)


def _csv(value: str) -> list[str]:
    return [v for v in value.split(",") if v]


def _add_eval_args(p):
    p.add_argument("--model", required=True,
                   help="smollm2-135m, vit-s14-focus, tiny-*, a HF folder, a .gguf, a hub id, or timm:NAME "
                        "(pretrained weights from the local cache; timm:NAME?file=WEIGHTS, timm:NAME?pretrained=0)")
    p.add_argument("--eval", type=_csv, default=[], help="texts for perplexity, comma separated (wiki, news:val, file.txt)")
    p.add_argument("--seqlen", type=int, default=None,
                   help="tokens per window, for evaluation and (prune) calibration alike")
    p.add_argument("--eval-seqlen", type=int, default=None,
                   help="tokens per evaluation window (default: --seqlen, else 1024)")
    p.add_argument("--eval-windows", type=int, default=None, help="cap on evaluation windows (quick runs)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--offload", action="store_true",
                   help="keep weights on the CPU and move one block at a time to --device (models larger than the GPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--zeroshot", type=_csv, default=[], help="zero-shot tasks, comma separated, or 'paper' for the seven")
    p.add_argument("--limit", type=int, default=None, help="examples per zero-shot task (quick runs)")
    p.add_argument("--zeroshot-engine", default="lm-eval", choices=["lm-eval", "fast"],
                   help="lm-eval: lm-evaluation-harness offline; fast: our batched scorer of the same prompts")
    p.add_argument("--attention", action="store_true", help="attention KL / RMSE against --reference")
    p.add_argument("--reference", help="dense reference model for --attention (prune: the model before pruning)")
    p.add_argument("--attention-windows", type=int, default=4, help="windows of the first --eval text for --attention")
    p.add_argument("--vision-train", type=int, default=1000, help="vision: train images for the k-NN probe")
    p.add_argument("--vision-test", type=int, default=500, help="vision: test images scored")
    p.add_argument("--out", help="JSON record to write")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: D2P_THREADS, else half the cores)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="d2p", description="Post-training pruning of transformers (D2Prune and baselines).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    ev = sub.add_parser("eval", help="perplexity (and more) of a model")
    _add_eval_args(ev)
    from .prune.cli_args import add_prune_args
    pr = sub.add_parser("prune", help="prune a model, evaluate it, write a record")
    _add_eval_args(pr)
    add_prune_args(pr)
    ft = sub.add_parser("finetune", help="LoRA recovery fine-tuning of a pruned model, sparsity kept")
    ft.add_argument("--model", required=True, help="pruned HF folder (d2p prune --save DIR), or any model name")
    ft.add_argument("--data", default="news", help="training text (its calib split)")
    ft.add_argument("--steps", type=int, default=200)
    ft.add_argument("--lora-r", type=int, default=8)
    ft.add_argument("--lora-alpha", type=int, default=16)
    ft.add_argument("--targets", type=_csv, default=["q_proj", "v_proj"])
    ft.add_argument("--lr", type=float, default=2e-4, help="paper: 1e-4 for 1 epoch of 30k C4 samples on a GPU")
    ft.add_argument("--seqlen", type=int, default=128, help="tokens per training window (paper: 1024)")
    ft.add_argument("--batch-size", type=int, default=4)
    ft.add_argument("--seed", type=int, default=0)
    ft.add_argument("--eval", type=_csv, default=[], help="perplexity before and after, on these texts")
    ft.add_argument("--eval-windows", type=int, default=8)
    ft.add_argument("--out", required=True, help="output folder: checkpoint/ (resumable), model/, finetune.json")
    ft.add_argument("--no-progress", action="store_true")
    return parser


def _finetune(args) -> int:
    from .evaluate import perplexities
    from .finetune import finetune, save_finetuned
    from .models import load_model
    from .record import versions
    if args.steps < 1 or args.lora_r < 1:
        raise UsageError("--steps and --lora-r must be >= 1")
    from . import checks
    checks.model_source(args.model)
    checks.text(args.data, "training", args.seqlen + 1)
    for spec in args.eval:
        checks.text(spec, "evaluation", 512)
    model, tok = load_model(args.model)
    before = perplexities(model, tok, args.eval, 512, args.eval_windows, progress=False)[0] if args.eval else {}
    res = finetune(model, tok, args.out, args.data, args.steps, args.lora_r, args.lora_alpha, targets=tuple(args.targets),
                   lr=args.lr, seqlen=args.seqlen, batch_size=args.batch_size, seed=args.seed,
                   progress=not args.no_progress)
    after = perplexities(res["model"], tok, args.eval, 512, args.eval_windows, progress=False)[0] if args.eval else {}
    log = {**res["log"], "model": args.model, "ppl_before": before, "ppl_after": after, "versions": versions()}
    save_finetuned(res["model"], tok, args.out, log)
    print(f"[d2p] finetune {args.model}: {args.steps} steps, final loss {log['losses'][-1]:.3f}; ppl {before} -> {after}; "
          f"saved {args.out}/model")
    return 0


def _check_common(args):
    from .zeroshot import PAPER_TASKS, TASKS
    if args.zeroshot == ["paper"]:
        args.zeroshot = list(PAPER_TASKS)
    bad = [t for t in args.zeroshot if t not in TASKS]
    if bad:
        raise UsageError(f"unknown zero-shot task(s) {', '.join(bad)}: expected {', '.join(TASKS)} or 'paper'")
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be >= 1, got {args.limit}")
    if args.attention and not args.eval:
        raise UsageError("--attention needs an --eval text for its windows")
    if getattr(args, "compress", None) and not (args.save and args.pattern == "2:4"):
        raise UsageError("--compress 2:4 needs --save DIR and --pattern 2:4")
    if args.attention and args.command == "eval" and not args.reference:
        raise UsageError("--attention with `d2p eval` needs --reference DENSE_MODEL")
    for flag in ("seqlen", "eval_seqlen", "cfg_seqlen"):
        if getattr(args, flag, None) is not None and getattr(args, flag) < 2:
            raise UsageError(f"--{flag.replace('cfg_', 'calib_').replace('_', '-')} must be >= 2, "
                             f"got {getattr(args, flag)}")
    from .prune.cli_args import EVAL_SEQLEN
    args.eval_seqlen = args.eval_seqlen or args.seqlen or EVAL_SEQLEN
    if args.eval_windows is not None and args.eval_windows < 1:
        raise UsageError(f"--eval-windows must be >= 1, got {args.eval_windows}")
    _check_inputs(args)


IMAGE_DATA = ("fashion-mnist", "imagenet:")


def _check_inputs(args) -> None:
    """Everything that can be checked before a model or text is loaded (d2p_helpers.checks)."""
    from . import checks
    if args.out:
        checks.output_file(args.out, "--out")
    if getattr(args, "save", None):
        checks.output_folder(args.save, "--save")
    checks.device(args.device)
    checks.model_source(args.model)
    for spec in args.eval:
        if not spec.startswith(IMAGE_DATA):
            checks.text(spec, "evaluation", args.eval_seqlen)
    if args.command == "prune":
        from .prune.config import PruneConfig
        calib = args.cfg_calib or PruneConfig.calib
        if not calib.startswith(IMAGE_DATA):
            checks.text(calib, "calibration", (args.cfg_seqlen or args.seqlen or PruneConfig.seqlen) + 1)


def run(args) -> dict:
    import torch
    from .evaluate import perplexities
    from .models import load_model, model_summary
    from .record import peak_rss_mb, versions

    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    if args.command == "prune":
        from .prune.cli_args import options_from_args
        options = options_from_args(args)   # validates before any work
    model, tok = load_model(args.model, dtype=args.dtype, device="cpu" if args.offload else args.device)
    record = {"model": args.model, "model_summary": model_summary(model)}
    from .models import is_vision
    if is_vision(model):
        return _run_vision(args, model, record, t0)
    if tok is not None:      # every evaluation text's windows before any pruning: a bad text fails first
        from .data import eval_windows
        for spec in args.eval:
            eval_windows(tok, spec, args.eval_seqlen, args.eval_windows)
    reference = None
    if args.attention:
        if args.reference:
            reference, _ = load_model(args.reference, dtype=args.dtype, device=args.device)
        else:
            import copy
            reference = copy.deepcopy(model)
    if args.command == "prune":
        from .prune import prune
        report = prune(model, tokenizer=tok, **options, progress=not args.no_progress)
        record.update(report.to_record())
        if args.save and args.compress:
            from .compress import save_compressed
            record["compressed"] = {k: v for k, v in save_compressed(model, tok, args.save).items() if k != "packed"}
            record["saved_to"] = args.save
        elif args.save:
            from .prune.engine import save_pruned
            save_pruned(model, tok, args.save, report)
            record["saved_to"] = args.save
    if args.offload and args.device != "cpu":
        from accelerate import cpu_offload
        cpu_offload(model, execution_device=torch.device(args.device))   # evaluation streams weights per module
    ppl, sources = perplexities(model, tok, args.eval, args.eval_seqlen, args.eval_windows, args.batch_size,
                                progress=not args.no_progress, device=args.device)
    record["ppl"] = ppl
    record["protocol"] = {"seqlen": args.eval_seqlen, "eval_windows": args.eval_windows, "seed": args.seed,
                          "dtype": args.dtype, "device": args.device, "eval": sources,
                          "ppl_definition": "exp(mean next-token NLL over non-overlapping windows of the joined test text)"}
    if args.zeroshot:
        from . import zeroshot as zs
        record.update(zs.evaluate(model, tok, args.zeroshot, args.limit, args.zeroshot_engine,
                                  progress=not args.no_progress))
        record["protocol"]["zeroshot_limit"] = args.limit
    if reference is not None:
        from .attention import compare_attention
        from .data import eval_windows
        win = eval_windows(tok, args.eval[0], args.eval_seqlen, args.attention_windows)
        record["attention"] = compare_attention(model, reference, win.ids, progress=not args.no_progress)
        record["attention"]["reference"] = args.reference or f"{args.model} before pruning"
    record["versions"] = versions()
    record["peak_rss_mb"] = round(peak_rss_mb(), 1)
    if args.device.startswith("cuda"):
        record["peak_device_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    record["seconds"] = time.perf_counter() - t0
    return record


def _run_vision(args, model, record, t0) -> dict:
    """ViT/DeiT/DINOv2: image calibration, then top-1 or k-NN top-1, CLS cosine and attention KL vs dense."""
    import copy
    from . import vision
    from .record import peak_rss_mb, versions
    from .prune.config import PruneConfig
    calib = (args.cfg_calib or PruneConfig.calib) if args.command == "prune" else None
    image_specs = ([calib] if calib else []) + args.eval
    bad = [s for s in image_specs if s != "fashion-mnist" and not s.startswith("imagenet:")]
    if bad or not args.eval:
        raise UsageError(f"vision models need image data: --calib/--eval fashion-mnist or imagenet:PATH (got {', '.join(bad) or 'no --eval'})")
    from .models import is_timm
    if getattr(args, "compress", None):
        raise UsageError("--compress is for language models; save vision models with --save alone")
    dense = copy.deepcopy(model)
    if args.command == "prune":
        from .prune import prune
        from .prune.cli_args import options_from_args
        opts = options_from_args(args)
        samples = vision.calibration_samples(calib, opts.get("nsamples", PruneConfig.nsamples), args.seed, model)
        report = prune(model, samples=samples, progress=not args.no_progress,
                       **opts)
        record.update(report.to_record())
        record["calibration"] = {"source": calib, "images": len(samples),
                                 "size": vision.input_spec(model)["size"]}
        if args.save:
            if is_timm(model):
                from .models import save_timm
                save_timm(model, args.save, record)
            else:
                from .prune.engine import save_pruned
                save_pruned(model, None, args.save, report)
            record["saved_to"] = args.save
    record["vision"] = vision.evaluate(model, dense, args.eval[0], args.vision_train, args.vision_test, args.seed,
                                       progress=not args.no_progress)
    record["versions"] = versions()
    record["peak_rss_mb"] = round(peak_rss_mb(), 1)
    record["seconds"] = time.perf_counter() - t0
    return record


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .record import set_threads
    set_threads(getattr(args, "threads", None))
    if args.command == "finetune":
        try:
            return _finetune(args)
        except (UsageError, InputError, ModelError, DataError, AssetError, ValueError) as exc:
            print(f"d2p: error: {exc}", file=sys.stderr)
            return 2
    try:
        _check_common(args)
        record = run(args)
    except (UsageError, InputError, ModelError, DataError, AssetError, PruneError, TaskError) as exc:
        print(f"d2p: error: {exc}", file=sys.stderr)
        return 2
    from .record import write_json
    if args.out:
        write_json(args.out, record)
    summary = ", ".join(f"{k} {v:.3f}" for k, v in record.get("ppl", {}).items())
    print(f"[d2p] {args.command} {args.model}: ppl {summary or '-'}"
          + (f"; sparsity {record['achieved_sparsity']:.4f} in {record['prune_seconds']:.1f}s" if "achieved_sparsity" in record else "")
          + (f"; zero-shot mean {record['zeroshot_mean']:.4f} ({record['zeroshot_mean_definition']})" if "zeroshot_mean" in record else "")
          + (f"; attention KL {record['attention']['mean_kl']:.4g}" if "attention" in record else "")
          + ("; vision " + ", ".join(f"{k} {v:.4f}" for k, v in record["vision"].items()
                                     if isinstance(v, float)) if "vision" in record else "")
          + (f"; record {args.out}" if args.out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
