"""``prism-vla``: train vision-language-action policies.

Examples::

    prism-vla bc --data data/reach data/push --out ckpt/vla_bc --steps 3000
    prism-vla rabc --data data/push_mixed --out ckpt/vla_rabc                 # ground-truth progress
    prism-vla rabc --data data/push_mixed --progress reports/push/progress.parquet --out ckpt/vla_rabc_grm
    prism-vla bc --data data/reach data/push --out ckpt/vla_bc --resume       # continue an interrupted run
    prism-vla rl --init ckpt/vla_bc --task push --reward grm --out ckpt/vla_rl     # online RL, 300 episodes
    prism-vla dpo --init ckpt/vla_bc --task push --reward grm --out ckpt/vla_dpo   # reward-ranked DPO
    prism-vla rft --init ckpt/vla_bc --task push --reward grm --out ckpt/vla_rft   # reward-filtered BC

The output folder is a policy checkpoint: ``prism-eval --run DIR --task push``,
``prism-record --policy vla:DIR`` and the ROS 2 node (``policy:=DIR``) run it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from episodes.cli_errors import parse_config, run_cli

COMMANDS = {
    "bc": "Behaviour cloning on LeRobot v3 datasets (--weighting progress: RA-BC).",
    "rabc": "RA-BC: behaviour cloning weighted by each chunk's progress gain (bc --weighting progress).",
    "rl": "Online RL from a BC checkpoint with any reward spec (token-level PPO, KL anchor to the start).",
    "dpo": "Reward-ranked DPO from a BC checkpoint: best vs worst rollout of each start state.",
    "rft": "Reward-filtered fine-tuning from a BC checkpoint: BC on the best rollouts of each start state.",
}


def _usage() -> str:
    lines = ["usage: prism-vla COMMAND [options]   (prism-vla COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<5} {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines)


def _train(argv: list[str], command: str) -> int:
    from policies.vla.train_bc import BCConfig, step_checkpoints, train_bc  # torch: kept out of --help

    if not any(a == "--weighting" or a.startswith("--weighting=") for a in argv):
        argv = [*argv, "--weighting", "progress" if command == "rabc" else "none"]
    cfg = parse_config(BCConfig, argv, description=COMMANDS[command])
    try:
        summary = train_bc(cfg)
    except KeyboardInterrupt:
        saved = step_checkpoints(cfg.out)
        where = (
            f"checkpoint saved in {saved[-1][1]}; resume with the same command plus --resume"
            if saved
            else "no checkpoint was saved yet"
        )
        print(f"prism-vla: interrupted; {where}", file=sys.stderr)
        return 130
    print(
        f"trained {summary['steps']} steps on {summary['samples']} samples ({', '.join(summary['tasks'])}); "
        f"loss {summary['first_loss']:.3f} -> {summary['final_loss']:.3f} per token -> {cfg.out}"
    )
    return 0


def _post_train(argv: list[str], command: str) -> int:
    from policies.vla.train_online import (  # torch (as above)
        DPOConfig,
        RFTConfig,
        RLConfig,
        interrupted_message,
        train_online,
    )

    config_class = {"rl": RLConfig, "dpo": DPOConfig, "rft": RFTConfig}[command]
    cfg = parse_config(config_class, argv, description=COMMANDS[command])
    try:
        summary = train_online(cfg)
    except KeyboardInterrupt:
        print(f"prism-vla: {interrupted_message(cfg.out)}", file=sys.stderr)
        return 130
    print(
        f"{summary['episodes']} online episodes on {summary['task']} with reward {summary['reward']}: evaluation "
        f"success {summary['start_eval_success']:.0%} -> {summary['final_eval_success']:.0%} "
        f"(best {summary['best_eval_success']:.0%}) -> {cfg.out} (curve.csv, curve.png)"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage(), file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"prism-vla: error: unknown command {name!r} (commands: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    run = _post_train if name in ("rl", "dpo", "rft") else _train
    return run_cli(f"prism-vla {name}", lambda argv: run(argv, name), rest)


if __name__ == "__main__":
    sys.exit(main())
