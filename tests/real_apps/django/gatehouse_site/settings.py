"""Django's own admin site, unmodified, as a legacy dashboard behind gatehouse.

Only deployment settings live here, the ones any site behind a TLS-terminating
reverse proxy needs: trust X-Forwarded-Proto from the proxy, keep state in
the test's temp dir. Nothing about gatehouse.
"""
import os

BASE_DIR = os.environ["GATEHOUSE_TEST_APP_DIR"]
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "gatehouse-real-apps-test-only")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
# gatehouse terminates TLS and sets X-Forwarded-Proto (and strips any copy a
# client sent), so Django's CSRF origin checks see the browser's https origin.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "gatehouse_site.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(BASE_DIR, "db.sqlite3"),
    }
}
STATIC_URL = "/static/"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
