# Shared fixtures: a real local S3 endpoint (moto's ThreadedMotoServer) and real SMTP servers
# (aiosmtpd, plain and STARTTLS+AUTH), all on 127.0.0.1.
pytest_plugins = ["magikarp_tests.support_s3", "magikarp_tests.support_smtp"]
