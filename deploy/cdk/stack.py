"""The AWS infrastructure of a TMagikarp deployment, sized by deploy/settings.yaml: an encrypted private
bucket, PostgreSQL for Dagster, the Dagster services on Fargate in private subnets, secrets, SES, least-
privilege roles, logs, alarms and a monthly budget alarm."""

from pathlib import Path
from typing import Any

import aws_cdk as cdk
import yaml
from aws_cdk import aws_budgets as budgets
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_servicediscovery as servicediscovery
from aws_cdk import aws_ses as ses
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

SETTINGS = Path(__file__).resolve().parents[1] / "settings.yaml"
CODE_PORT, WEB_PORT = 4000, 3000
DAGSTER_HOME = "/opt/dagster/home"
RETENTION = {
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    90: logs.RetentionDays.THREE_MONTHS,
}
# Read-only calls the ECS run launcher makes that AWS cannot scope to a resource (they need "*").
UNSCOPED_ACTIONS = ["ecs:DescribeTaskDefinition", "ec2:DescribeNetworkInterfaces"]


def load_settings(path: Path = SETTINGS) -> dict[str, Any]:
    """The deployment settings shared with deploy/cost.py."""
    return yaml.safe_load(path.read_text())


class MagikarpStack(cdk.Stack):
    """One deployment (dev, staging or prod) of the platform."""

    def __init__(self, scope: Construct, construct_id: str, settings: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.settings = settings
        name = f"{settings['project']}-{settings['deployment']}"
        self.vpc = self._vpc()
        self.bucket = self._bucket()
        self.app_secret = secretsmanager.Secret(
            self,
            "AppSecrets",
            secret_name=f"{settings['project']}/{settings['deployment']}/app",
            description="API keys (POLYGON_API_KEY, ALPHAVANTAGE_API_KEY) and SMTP password, as one JSON "
            "object; set with `aws secretsmanager put-secret-value`",
        )
        self.db = self._database()
        identity = ses.EmailIdentity(
            self, "SenderIdentity", identity=ses.Identity.domain(settings["email_domain"])
        )
        self.identity_arn = self.format_arn(
            service="ses", resource="identity", resource_name=settings["email_domain"]
        )
        repository = ecr.Repository(
            self,
            "Images",
            repository_name=name,
            image_scan_on_push=True,
            lifecycle_rules=[ecr.LifecycleRule(max_image_count=10)],
        )
        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            vpc=self.vpc,
            cluster_name=name,
            default_cloud_map_namespace=ecs.CloudMapNamespaceOptions(
                name=f"{name}.internal", vpc=self.vpc, type=servicediscovery.NamespaceType.DNS_PRIVATE
            ),
        )
        self.image = ecs.ContainerImage.from_ecr_repository(repository, tag=settings["deployment"])
        self.services_sg = ec2.SecurityGroup(self, "ServicesSg", vpc=self.vpc, allow_all_outbound=True)
        self.services_sg.add_ingress_rule(self.services_sg, ec2.Port.tcp(CODE_PORT), "code server gRPC")
        self.db.connections.allow_default_port_from(self.services_sg, "Dagster storage")
        self.app_role = self._app_role("AppTaskRole")
        run_task = self._task(
            "run", settings["runs"]["daily"], self.app_role, ["dagster", "api", "execute_run"]
        )
        self._services(run_task)
        self._alarms()
        self._budget()
        cdk.CfnOutput(self, "BucketName", value=self.bucket.bucket_name)
        cdk.CfnOutput(self, "RepositoryUri", value=repository.repository_uri)
        cdk.CfnOutput(self, "AppSecretName", value=self.app_secret.secret_name)
        cdk.CfnOutput(self, "DkimToken1", value=identity.dkim_dns_token_name1)

    def _vpc(self) -> ec2.Vpc:
        """Public subnets hold only the NAT instance; services in private subnets, the database isolated."""
        config = self.settings["vpc"]
        nat = ec2.NatProvider.instance_v2(
            instance_type=ec2.InstanceType(config["nat_instance_type"]),
            machine_image=ec2.MachineImage.latest_amazon_linux2023(cpu_type=ec2.AmazonLinuxCpuType.ARM_64),
            default_allowed_traffic=ec2.NatTrafficDirection.OUTBOUND_ONLY,
        )
        vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=config["max_azs"],
            nat_gateways=1,
            nat_gateway_provider=nat,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(
                    name="services", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=22
                ),
                ec2.SubnetConfiguration(
                    name="data", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24
                ),
            ],
        )
        vpc.add_gateway_endpoint("S3", service=ec2.GatewayVpcEndpointAwsService.S3)  # free, no NAT traffic
        return vpc

    def _bucket(self) -> s3.Bucket:
        """Assets, models, reports, the email archive and compute logs; SSE required on every PUT."""
        config = self.settings["storage"]
        bucket = s3.Bucket(
            self,
            "Data",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=cdk.RemovalPolicy.RETAIN,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="old-versions",
                    noncurrent_version_expiration=cdk.Duration.days(config["noncurrent_version_days"]),
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(7),
                ),
                s3.LifecycleRule(
                    id="compute-logs",
                    prefix="compute_logs/",
                    expiration=cdk.Duration.days(config["compute_logs_days"]),
                ),
                s3.LifecycleRule(
                    id="infrequent-access",
                    transitions=[
                        s3.Transition(
                            storage_class=s3.StorageClass.INFREQUENT_ACCESS,
                            transition_after=cdk.Duration.days(config["infrequent_access_after_days"]),
                        )
                    ],
                ),
            ],
        )
        bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="DenyUnencryptedPuts",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=["s3:PutObject"],
                resources=[bucket.arn_for_objects("*")],
                conditions={"Null": {"s3:x-amz-server-side-encryption": "true"}},
            )
        )
        return bucket

    def _database(self) -> rds.DatabaseInstance:
        config = self.settings["database"]
        db = rds.DatabaseInstance(
            self,
            "DagsterDb",
            engine=rds.DatabaseInstanceEngine.postgres(version=rds.PostgresEngineVersion.VER_15),
            instance_type=ec2.InstanceType(config["instance_class"]),
            vpc=self.vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED),
            credentials=rds.Credentials.from_generated_secret(
                "dagster", secret_name=f"{self.settings['project']}/{self.settings['deployment']}/db"
            ),
            database_name="dagster",
            allocated_storage=config["allocated_storage_gb"],
            storage_type=rds.StorageType.GP3,
            storage_encrypted=True,
            publicly_accessible=False,
            multi_az=False,
            backup_retention=cdk.Duration.days(config["backup_retention_days"]),
            deletion_protection=True,
            removal_policy=cdk.RemovalPolicy.SNAPSHOT,
            cloudwatch_logs_retention=logs.RetentionDays.ONE_MONTH,
        )
        db.add_rotation_single_user(automatically_after=cdk.Duration.days(config["rotation_days"]))
        return db

    def _app_role(self, construct_id: str) -> iam.Role:
        """What the pipeline code may do: its bucket prefix and compute logs, its secret, send email."""
        role = iam.Role(self, construct_id, assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"))
        prefixes = [f"{self.settings['deployment']}/*", "compute_logs/*"]
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                resources=[self.bucket.arn_for_objects(prefix) for prefix in prefixes],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[self.bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [p.rstrip("*") + "*" for p in prefixes]}},
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["secretsmanager:GetSecretValue"], resources=[self.app_secret.secret_arn]
            )
        )
        role.add_to_policy(iam.PolicyStatement(actions=["ses:SendRawEmail"], resources=[self.identity_arn]))
        return role

    def _task(
        self, name: str, size: dict[str, int], role: iam.Role, command: list[str] | None
    ) -> ecs.FargateTaskDefinition:
        """A Fargate ARM64 task of the code image with the Dagster storage settings and a log group."""
        task = ecs.FargateTaskDefinition(
            self,
            f"{name.title().replace('_', '')}Task",
            family=f"{self.settings['project']}-{self.settings['deployment']}-{name.replace('_', '-')}",
            cpu=size["cpu"],
            memory_limit_mib=size["memory"],
            task_role=role,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.ARM64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
        )
        log_group = logs.LogGroup(
            self,
            f"{name.title().replace('_', '')}Logs",
            log_group_name=f"/{self.settings['project']}/{self.settings['deployment']}/{name}",
            retention=RETENTION[self.settings["logs"]["retention_days"]],
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        task.add_container(
            name,
            image=self.image,
            command=command,
            logging=ecs.LogDriver.aws_logs(stream_prefix=name, log_group=log_group),
            environment={
                "MAGIKARP_DEPLOYMENT": self.settings["deployment"],
                "MAGIKARP_S3_BUCKET": self.bucket.bucket_name,
                "MAGIKARP_SECRETS_ID": self.app_secret.secret_name,
                "MAGIKARP_EMAIL_SENDER": f"tmagikarp@{self.settings['email_domain']}",
                "DAGSTER_HOME": DAGSTER_HOME,
                "DAGSTER_PG_HOST": self.db.db_instance_endpoint_address,
                "DAGSTER_PG_PORT": self.db.db_instance_endpoint_port,
                "DAGSTER_PG_DB": "dagster",
                "DAGSTER_PG_USERNAME": "dagster",
            },
            secrets={"DAGSTER_PG_PASSWORD": ecs.Secret.from_secrets_manager(self.db.secret, "password")},
        )
        self.log_groups = [*getattr(self, "log_groups", []), log_group]
        return task

    def _services(self, run_task: ecs.FargateTaskDefinition) -> None:
        """Code server (gRPC, found as code.<cluster>.internal: deploy/ecs/workspace.yaml), webserver and
        daemon; the daemon launches each run as a task of ``run_task`` (training runs larger, through the
        ecs/cpu and ecs/memory run tags)."""
        sizes = self.settings["services"]
        code = self._task("code_server", sizes["code_server"], self.app_role, [
            "dagster", "code-server", "start", "-h", "0.0.0.0", "-p", str(CODE_PORT),
            "-m", "magikarp_assets.definitions",
        ])  # fmt: skip
        web_role = iam.Role(self, "WebTaskRole", assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"))
        web_role.add_to_policy(  # the UI shows step logs
            iam.PolicyStatement(
                actions=["s3:GetObject"], resources=[self.bucket.arn_for_objects("compute_logs/*")]
            )
        )
        web = self._task("webserver", sizes["webserver"], web_role, [
            "dagster-webserver", "-h", "0.0.0.0", "-p", str(WEB_PORT), "-w", f"{DAGSTER_HOME}/workspace.yaml",
        ])  # fmt: skip
        daemon_role = self._app_role("DaemonTaskRole")
        daemon = self._task("daemon", sizes["daemon"], daemon_role, [
            "dagster-daemon", "run", "-w", f"{DAGSTER_HOME}/workspace.yaml",
        ])  # fmt: skip
        daemon.default_container.add_environment("MAGIKARP_RUN_TASK_DEFINITION", run_task.task_definition_arn)
        daemon.default_container.add_environment("MAGIKARP_ECS_CLUSTER", self.cluster.cluster_name)
        self._grant_run_launch(daemon_role, run_task)
        subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        for name, task in (("code", code), ("webserver", web), ("daemon", daemon)):
            ecs.FargateService(
                self,
                f"{name.title()}Service",
                cluster=self.cluster,
                task_definition=task,
                desired_count=1,
                assign_public_ip=False,
                vpc_subnets=subnets,
                security_groups=[self.services_sg],
                cloud_map_options=ecs.CloudMapOptions(name="code") if name == "code" else None,
                circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
                min_healthy_percent=0 if name == "daemon" else 100,  # never two daemons at once
                max_healthy_percent=100 if name == "daemon" else 200,
            )

    def _grant_run_launch(self, role: iam.Role, run_task: ecs.FargateTaskDefinition) -> None:
        """Start, watch and stop run tasks of this cluster, and pass the run task its roles; nothing else."""
        family = self.format_arn(
            service="ecs", resource="task-definition", resource_name=f"{run_task.family}:*"
        )
        tasks = self.format_arn(
            service="ecs", resource="task", resource_name=f"{self.cluster.cluster_name}/*"
        )
        role.add_to_policy(iam.PolicyStatement(actions=["ecs:RunTask"], resources=[family]))
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["ecs:DescribeTasks", "ecs:StopTask", "ecs:TagResource"], resources=[tasks]
            )
        )
        role.add_to_policy(iam.PolicyStatement(actions=UNSCOPED_ACTIONS, resources=["*"]))
        passed = [self.app_role.role_arn, run_task.obtain_execution_role().role_arn]
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=passed,
                conditions={"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}},
            )
        )

    def _alarms(self) -> None:
        """Operator alarms by email: database CPU and free space, and errors in the run logs."""
        topic = sns.Topic(self, "Alarms", enforce_ssl=True)
        topic.add_subscription(subscriptions.EmailSubscription(self.settings["ops_email"]))
        alarms = [
            self.db.metric_cpu_utilization(period=cdk.Duration.minutes(15)).create_alarm(
                self, "DbCpu", threshold=80, evaluation_periods=2, alarm_description="Dagster DB CPU > 80%"
            ),
            self.db.metric_free_storage_space().create_alarm(
                self,
                "DbFreeStorage",
                threshold=2 * 1024**3,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
                alarm_description="Dagster DB has less than 2 GiB free",
            ),
        ]
        for group in self.log_groups:
            if group.node.id not in ("RunLogs", "DaemonLogs"):
                continue
            metric = group.add_metric_filter(
                f"{group.node.id}Errors",
                filter_pattern=logs.FilterPattern.any_term("RUN_FAILURE", "Traceback"),
                metric_namespace="TMagikarp",
                metric_name=f"{group.node.id}Errors",
            ).metric(statistic="Sum", period=cdk.Duration.hours(1))
            alarms.append(
                metric.create_alarm(
                    self,
                    f"{group.node.id}ErrorAlarm",
                    threshold=1,
                    evaluation_periods=1,
                    treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                    alarm_description=f"errors in {group.node.id}",
                )
            )
        for alarm in alarms:
            alarm.add_alarm_action(cw_actions.SnsAction(topic))

    def _budget(self) -> None:
        """A monthly cost budget: email at 80% of actual spend and when the forecast passes 100%."""
        limit = self.settings["budget_usd"]
        subscriber = budgets.CfnBudget.SubscriberProperty(
            subscription_type="EMAIL", address=self.settings["ops_email"]
        )

        def notify(kind: str, percent: int) -> budgets.CfnBudget.NotificationWithSubscribersProperty:
            return budgets.CfnBudget.NotificationWithSubscribersProperty(
                notification=budgets.CfnBudget.NotificationProperty(
                    notification_type=kind, comparison_operator="GREATER_THAN", threshold=percent,
                    threshold_type="PERCENTAGE",
                ),
                subscribers=[subscriber],
            )  # fmt: skip

        budgets.CfnBudget(
            self,
            "MonthlyBudget",
            budget=budgets.CfnBudget.BudgetDataProperty(
                budget_name=f"{self.settings['project']}-{self.settings['deployment']}-monthly",
                budget_type="COST",
                time_unit="MONTHLY",
                budget_limit=budgets.CfnBudget.SpendProperty(amount=limit, unit="USD"),
            ),
            notifications_with_subscribers=[notify("ACTUAL", 80), notify("FORECASTED", 100)],
        )
