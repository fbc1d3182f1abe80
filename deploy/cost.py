"""Monthly AWS cost of the default production deployment, priced from deploy/settings.yaml (the sizes the CDK
app builds) and writing docs/cost.md, so the estimate and the infrastructure cannot drift apart.

    python deploy/cost.py            # print the estimate
    python deploy/cost.py --write    # regenerate docs/cost.md
"""

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ROOT / "deploy" / "settings.yaml"
DOC = ROOT / "docs" / "cost.md"
HOURS_PER_MONTH = 730
# us-east-1 on-demand list prices in USD (AWS public price pages, 2025). Check them in the AWS Pricing
# Calculator before relying on the totals; the structure of the estimate does not change with them.
PRICES = {
    "fargate_arm_vcpu_hour": 0.03238,
    "fargate_arm_gb_hour": 0.00356,
    "rds_hour": {"t4g.micro": 0.016, "t4g.small": 0.032, "t4g.medium": 0.065},
    "rds_gp3_gb_month": 0.115,
    "ec2_hour": {"t4g.nano": 0.0042, "t4g.micro": 0.0084},
    "ebs_gp3_gb_month": 0.08,
    "nat_instance_disk_gb": 8,
    "public_ipv4_hour": 0.005,
    "s3_standard_gb_month": 0.023,
    "s3_put_per_1000": 0.005,
    "s3_get_per_1000": 0.0004,
    "logs_ingest_gb": 0.50,
    "logs_storage_gb_month": 0.03,
    "alarm_month": 0.10,
    "secret_month": 0.40,
    "ses_per_1000": 0.10,
    "ecr_gb_month": 0.10,
    "route53_private_zone_month": 0.50,
}
ALARMS = 4  # deploy/cdk: database CPU and free storage, errors in the daemon and run logs
SECRETS = 2  # the application secret and the database credentials


def _task_hour(size: dict[str, Any]) -> float:
    return (
        size["cpu"] / 1024 * PRICES["fargate_arm_vcpu_hour"]
        + size["memory"] / 1024 * PRICES["fargate_arm_gb_hour"]
    )


def estimate(settings: dict[str, Any]) -> list[tuple[str, str, float]]:
    """Monthly cost lines (service, what is priced, USD) for a deployment's settings.

    :param settings: the content of deploy/settings.yaml.
    """
    lines = []
    for name, size in settings["services"].items():
        lines.append(
            (
                f"ECS Fargate: {name}",
                f"{size['cpu'] / 1024:g} vCPU, {size['memory'] / 1024:g} GB, ARM64, always on",
                _task_hour(size) * HOURS_PER_MONTH,
            )
        )
    for name, run in settings["runs"].items():
        hours = run["runs_per_month"] * run["hours_per_run"]
        what = f"{run['runs_per_month']} runs x {run['hours_per_run']:g} h at {run['cpu'] / 1024:g} vCPU, "
        lines.append(
            (f"ECS Fargate: {name} runs", what + f"{run['memory'] / 1024:g} GB", _task_hour(run) * hours)
        )
    db = settings["database"]
    lines.append(
        (
            "RDS PostgreSQL",
            f"db.{db['instance_class']} single-AZ, {db['allocated_storage_gb']} GB gp3, backups in free size",
            PRICES["rds_hour"][db["instance_class"]] * HOURS_PER_MONTH
            + db["allocated_storage_gb"] * PRICES["rds_gp3_gb_month"],
        )
    )
    nat = settings["vpc"]["nat_instance_type"]
    lines.append(
        (
            "VPC: NAT instance",
            f"{nat} + {PRICES['nat_instance_disk_gb']} GB disk + 1 public IPv4 (instead of a NAT gateway)",
            (PRICES["ec2_hour"][nat] + PRICES["public_ipv4_hour"]) * HOURS_PER_MONTH
            + PRICES["nat_instance_disk_gb"] * PRICES["ebs_gp3_gb_month"],
        )
    )
    storage = settings["storage"]
    lines.append(
        (
            "S3",
            f"{storage['s3_gb']} GB, {storage['s3_put_requests_per_month']:,} PUT, "
            f"{storage['s3_get_requests_per_month']:,} GET (gateway endpoint: no transfer cost)",
            storage["s3_gb"] * PRICES["s3_standard_gb_month"]
            + storage["s3_put_requests_per_month"] / 1000 * PRICES["s3_put_per_1000"]
            + storage["s3_get_requests_per_month"] / 1000 * PRICES["s3_get_per_1000"],
        )
    )
    log = settings["logs"]
    lines.append(
        (
            "CloudWatch",
            f"{log['ingest_gb_per_month']} GB logs, {log['retention_days']}-day retention, {ALARMS} alarms",
            log["ingest_gb_per_month"] * (PRICES["logs_ingest_gb"] + PRICES["logs_storage_gb_month"])
            + ALARMS * PRICES["alarm_month"],
        )
    )
    lines.append(("Secrets Manager", f"{SECRETS} secrets", SECRETS * PRICES["secret_month"]))
    lines.append(
        (
            "SES",
            f"{settings['email']['messages_per_month']} messages",
            settings["email"]["messages_per_month"] / 1000 * PRICES["ses_per_1000"],
        )
    )
    lines.append(
        (
            "ECR + Cloud Map",
            f"{settings['container_registry_gb']} GB of images, one private DNS namespace",
            settings["container_registry_gb"] * PRICES["ecr_gb_month"] + PRICES["route53_private_zone_month"],
        )
    )
    lines.append(("AWS Budgets", "one budget with alerts (the first two are free)", 0.0))
    return lines


def render(settings: dict[str, Any]) -> str:
    """docs/cost.md for these settings."""
    lines = estimate(settings)
    total = sum(cost for _, _, cost in lines)
    budget = settings["budget_usd"]
    rows = "\n".join(f"| {service} | {what} | {cost:,.2f} |" for service, what, cost in lines)
    verdict = "under" if total < budget else "OVER"
    return f"""# Monthly cost of the default production deployment

Generated by `python deploy/cost.py --write` from `deploy/settings.yaml`, the file the CDK app
(`deploy/cdk`) builds the infrastructure from; a test fails when this page and the script disagree.

Region {settings["region"]}, on-demand list prices (see `PRICES` in `deploy/cost.py`),
{HOURS_PER_MONTH} hours a month.

| service | what is priced | USD / month |
|---|---|---:|
{rows}
| **total** | | **{total:,.2f}** |

Budget: **{budget} USD** a month, {verdict} budget by {abs(budget - total):,.2f} USD. The stack's AWS
Budgets alarm emails the operators at 80% of actual spend and when the month's forecast passes 100%.

## Assumptions

- One production deployment; dev and staging are not running all month (start them when needed).
- Always-on services are the Dagster webserver, daemon and code server on Fargate ARM64 (Graviton).
  Runs start their own Fargate task each (ECS run launcher): about three runs per trading session
  (ingestion, features, signals), 21 sessions a month, plus one monthly training run on a larger task.
- No load balancer: the UI has no authentication of its own, so it stays in the private subnets and is reached
  through SSM/ECS Exec port forwarding or a VPN (an internet-facing ALB would add about 22 USD a month, plus
  authentication in front of it).
- A NAT instance instead of a managed NAT gateway (about 33 USD a month before data), and an S3 gateway
  endpoint so storage traffic does not cross it. Outbound data (price downloads, email) is small.
- RDS single-AZ, 7 days of automated backups (free up to the database size). Multi-AZ would double its line.
- Prices exclude tax, support plans and the free tier.

## How it stays under budget

- Small always-on tasks; the CPU-heavy work (features, training) runs in per-run tasks billed by the second.
- No NAT gateway, no load balancer, no KMS customer keys (S3-managed encryption, AES256), no Container
  Insights, 30-day log retention and lifecycle rules on old object versions and compute logs.
- Levers when it grows: fewer always-on vCPUs (webserver and daemon share one task), Fargate Spot for
  backfills, RDS reserved instance (about 40% off).
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--write", action="store_true", help=f"write {DOC.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    text = render(yaml.safe_load(SETTINGS.read_text()))
    if args.write:
        DOC.write_text(text)
        print(f"wrote {DOC}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
