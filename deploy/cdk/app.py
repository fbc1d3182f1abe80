"""`cdk synth` / `cdk deploy` entry point: the stack of the deployment described by deploy/settings.yaml
(email_domain, ops_email and deployment can be overridden with `-c name=value`)."""

import sys
from pathlib import Path

import aws_cdk as cdk

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stack import MagikarpStack, load_settings


def build_app(outdir: str | None = None) -> cdk.App:
    """The CDK app with one stack; synthesis needs no AWS account or network."""
    app = cdk.App(outdir=outdir)
    settings = load_settings()
    for key in ("email_domain", "ops_email", "deployment"):
        settings[key] = app.node.try_get_context(key) or settings[key]
    MagikarpStack(
        app,
        f"{settings['project'].title()}-{settings['deployment']}",
        settings=settings,
        env=cdk.Environment(region=settings["region"]),
        description="TMagikarp: Dagster on ECS Fargate, PostgreSQL, S3, SES",
    )
    return app


if __name__ == "__main__":
    build_app().synth()
