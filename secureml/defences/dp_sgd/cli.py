"""`secureml privacy`: plan a DP-SGD budget before training.

```
secureml privacy epsilon --noise 1.1 --n 60000 --batch-size 256 --epochs 60 --delta 1e-5
secureml privacy noise --epsilon 3 --n 60000 --batch-size 256 --epochs 60
```
"""
import argparse
import json

from ...schema import PositiveInt, arg_type
from .accounting import ACCOUNTANTS, default_delta, make_plan
from .config import Delta, Epsilon, NoiseMultiplier


def _add_schedule(parser) -> None:
    count = arg_type(PositiveInt)
    parser.add_argument("--n", type=count, required=True, metavar="N",
                        help="number of training examples")
    parser.add_argument("--batch-size", type=count, required=True,
                        help="batch size (expected batch size under Poisson sampling)")
    parser.add_argument("--epochs", type=count, required=True)
    parser.add_argument("--delta", type=arg_type(Delta),
                        help="delta (default: min(1e-5, 1/(10 N)); must be below 1/N)")
    parser.add_argument("--accountant", choices=ACCOUNTANTS, default="rdp",
                        help="rdp (fast) or pld (tighter, slower); default rdp")
    parser.add_argument("--sampling", choices=("poisson", "shuffle"), default="poisson",
                        help="how batches are drawn; epsilon always assumes Poisson sampling")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="privacy_command", metavar="{epsilon,noise}", required=True)
    epsilon = sub.add_parser("epsilon", help="epsilon spent by training with a given noise",
                             description="Epsilon of DP-SGD with a given noise multiplier.")
    epsilon.add_argument("--noise", type=arg_type(NoiseMultiplier), required=True,
                         help="noise multiplier (noise standard deviation / clip norm)")
    _add_schedule(epsilon)
    noise = sub.add_parser("noise", help="the smallest noise that meets a target epsilon",
                           description="Smallest noise multiplier whose epsilon is at most the "
                                       "target.")
    noise.add_argument("--epsilon", type=arg_type(Epsilon), required=True, help="target epsilon")
    _add_schedule(noise)


def main(args) -> int:
    delta = args.delta if args.delta is not None else default_delta(args.n)
    plan = make_plan(data_size=args.n, batch_size=args.batch_size, epochs=args.epochs,
                     delta=delta, accountant=args.accountant, sampling=args.sampling,
                     **({"noise_multiplier": args.noise} if args.privacy_command == "epsilon"
                        else {"target_epsilon": args.epsilon}))
    result = {**plan.describe(), "epsilon": plan.epsilon()}
    if args.json:
        print(json.dumps(result, indent=2, allow_nan=False))
        return 0
    print(f"epsilon           {result['epsilon']:.4f} at delta {plan.delta:.3g} "
          f"({plan.accountant} accountant)")
    print(f"noise multiplier  {plan.noise_multiplier:.4f}")
    print(f"sampling rate     {plan.sampling_rate:.6g} (batch {plan.batch_size} of "
          f"{plan.data_size}, {plan.sampling} batches)")
    print(f"steps             {plan.steps} ({plan.epochs} epochs of {plan.steps_per_epoch})")
    if plan.sampling == "shuffle":
        print("note              epsilon assumes Poisson sampling; for shuffled fixed-size "
              "batches it is an approximation, and the true value can be larger")
    return 0
