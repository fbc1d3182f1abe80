# Shared fixtures: a real local S3 endpoint (moto's ThreadedMotoServer on 127.0.0.1).
pytest_plugins = ["magikarp_tests.support_s3"]
