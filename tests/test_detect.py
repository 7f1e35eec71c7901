"""Detection: pure rules over literal project files, plus the one scan of a tmp directory."""
from __future__ import annotations

import json

import pytest

from agent_orchestrator.detect import (
    compose_services, detect, parse_dotenv, parse_requirements, parse_toml_dependencies, parse_yaml_subset,
    pick_service, scan,
)


def pkg(*deps: str, scripts: dict | None = None, dev: tuple[str, ...] = ()) -> str:
    return json.dumps({"dependencies": {d: "*" for d in deps}, "devDependencies": {d: "*" for d in dev},
                       "scripts": scripts or {}})


SAIL_COMPOSE = """\
services:
    laravel.test:
        build:
            context: ./vendor/laravel/sail/runtimes/8.3
            dockerfile: Dockerfile
            args:
                WWWGROUP: '${WWWGROUP}'
        image: sail-8.3/app
        extra_hosts:
            - 'host.docker.internal:host-gateway'
        ports:
            - '${APP_PORT:-80}:80'
            - '${VITE_PORT:-5173}:${VITE_PORT:-5173}'
        environment:
            WWWUSER: '${WWWUSER}'
            LARAVEL_SAIL: 1
        volumes:
            - '.:/var/www/html'
        networks:
            - sail
        depends_on:
            - mysql
    mysql:
        image: 'mysql/mysql-server:8.0'
        volumes:
            - 'sail-mysql:/var/lib/mysql'  # data
networks:
    sail:
        driver: bridge
volumes:
    sail-mysql:
        driver: local
"""

LARAVEL_COMPOSER = json.dumps({
    "require": {"php": "^8.2", "laravel/framework": "^11.0", "inertiajs/inertia-laravel": "^1.0"},
    "require-dev": {"laravel/sail": "^1.26", "laravel/pint": "^1.13", "larastan/larastan": "^2.0"},
})

# framework -> (files, expected framework key, expected default URL)
CASES = {
    "laravel": ({"composer.json": json.dumps({"require": {"laravel/framework": "^11"}}), "artisan": ""},
                "laravel", "http://localhost:8000"),
    "nextjs": ({"package.json": pkg("next", "react", "react-dom")}, "nextjs", "http://localhost:3000"),
    "nuxt": ({"package.json": pkg("nuxt", "vue")}, "nuxt", "http://localhost:3000"),
    "sveltekit": ({"package.json": pkg(dev=("@sveltejs/kit", "svelte", "vite"))}, "sveltekit", "http://localhost:5173"),
    "vue": ({"package.json": pkg("vue", dev=("vite",))}, "vue", "http://localhost:5173"),
    "vue-cli": ({"package.json": pkg("vue", dev=("@vue/cli-service",))}, "vue", "http://localhost:8080"),
    "react": ({"package.json": pkg("react", "react-dom", dev=("vite",))}, "react", "http://localhost:5173"),
    "react-cra": ({"package.json": pkg("react", "react-scripts")}, "react", "http://localhost:3000"),
    "express": ({"package.json": pkg("express")}, "express", "http://localhost:3000"),
    "django": ({"requirements.txt": "Django>=4.2\npsycopg[binary]\n", "manage.py": "import django\n"},
               "django", "http://localhost:8000"),
    "django-manage-only": ({"manage.py": "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'x')\n"},
                           "django", "http://localhost:8000"),
    "flask": ({"requirements.txt": "flask==3.0  # web\npytest\n"}, "flask", "http://localhost:5000"),
    "fastapi": ({"pyproject.toml": '[project]\nname = "api"\ndependencies = [\n  "fastapi>=0.110",\n'
                                   '  "uvicorn[standard]",\n]\n'}, "fastapi", "http://localhost:8000"),
    "rails": ({"Gemfile": 'source "https://rubygems.org"\ngem "rails", "~> 7.1"\ngem "pg"\n'}, "rails",
              "http://localhost:3000"),
    "go": ({"go.mod": "module example.com/app\n\ngo 1.22\n"}, "go", "http://localhost:8080"),
    "remix": ({"package.json": pkg("@remix-run/node", "@remix-run/react", "react")}, "remix", "http://localhost:3000"),
    "remix-vite": ({"package.json": pkg("@remix-run/react", "react", dev=("@remix-run/dev", "vite"))}, "remix",
                   "http://localhost:5173"),
    "astro": ({"package.json": pkg("astro")}, "astro", "http://localhost:4321"),
    "rust": ({"Cargo.toml": '[package]\nname = "app"\n\n[dependencies]\naxum = "0.7"\n'}, "rust",
             "http://localhost:8080"),
    "node": ({"package.json": pkg("lodash")}, "node", "http://localhost:3000"),
    "python": ({"pyproject.toml": '[project]\nname = "tool"\ndependencies = ["requests"]\n'}, "python",
               "http://localhost:8000"),
    "unknown": ({"README.md": "hi"}, "unknown", "http://localhost:3000"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_framework_is_detected_with_its_usual_url(case):
    files, framework, url = CASES[case]
    found = detect(files)
    assert (found.framework, found.app_url) == (framework, url)
    assert found.label and found.evidence


@pytest.mark.parametrize("env_file,text,url", [
    (".env", "APP_NAME=x\nAPP_URL=http://myapp.test\n", "http://myapp.test"),
    (".env", "PORT=4000\n", "http://localhost:4000"),
    (".env.local", "NEXT_PUBLIC_APP_URL='https://local.dev:8443/'\n", "https://local.dev:8443"),
    (".env", "export NEXTAUTH_URL=localhost:3005 # comment\n", "http://localhost:3005"),
])
def test_app_url_comes_from_env_files(env_file, text, url):
    assert detect({"package.json": pkg("next"), env_file: text}).app_url == url


def test_env_local_overrides_env_and_url_keys_beat_port():
    files = {"package.json": pkg("next"), ".env": "PORT=4000\nNEXT_PUBLIC_APP_URL=http://a.test\n",
             ".env.local": "NEXT_PUBLIC_APP_URL=http://b.test\n"}
    assert detect(files).app_url == "http://b.test"


def test_laravel_sail_inertia_vue_with_compose():
    files = {"composer.json": LARAVEL_COMPOSER, "artisan": "", "package.json": pkg("vue", "@inertiajs/vue3"),
             "docker-compose.yml": SAIL_COMPOSE, ".env": "APP_URL=http://localhost\nAPP_PORT=8080\n",
             "vendor/bin/sail": "", "vendor/": "", "node_modules/": ""}
    found = detect(files)
    assert found.framework == "laravel"
    assert found.label == "Laravel (Sail, Inertia, Vue)"
    assert found.app_url == "http://localhost"
    assert (found.docker_service, found.docker_work_dir, found.compose_file, found.docker_user) == (
        "laravel.test", "/var/www/html", "docker-compose.yml", "sail")
    assert found.symlink_dirs == ["vendor", "node_modules"]
    assert found.copy_files == [".env"]
    assert ["php", "artisan", "test"] in found.verify_commands
    assert ["vendor/bin/pint", "--test"] in found.verify_commands
    assert ["vendor/bin/phpstan", "analyse"] in found.verify_commands
    labels = {p["label"] for p in found.critical_patterns}
    assert {"database unreachable", "Docker is not running"} <= labels


def test_laravel_sail_without_app_url_uses_app_port_then_80():
    base = {"composer.json": LARAVEL_COMPOSER, "compose.yaml": SAIL_COMPOSE}
    assert detect({**base, ".env": "APP_PORT=8080\n"}).app_url == "http://localhost:8080"
    assert detect(base).app_url == "http://localhost"


def test_laravel_react_without_sail():
    files = {"composer.json": json.dumps({"require": {"laravel/framework": "^11"}}),
             "package.json": pkg("react", "@inertiajs/react", scripts={"lint": "eslint ."})}
    found = detect(files)
    assert found.label == "Laravel (Inertia, React)"
    assert found.docker_service is None and found.docker_user is None
    assert found.verify_commands == [["php", "artisan", "test"], ["npm", "run", "lint"]]


def test_backends_win_over_frontend_libraries_they_carry():
    assert detect({"Gemfile": "gem 'rails'\n", "package.json": pkg("react")}).framework == "rails"
    found = detect({"requirements.txt": "django\n", "package.json": pkg("vue")})
    assert found.framework == "django" and found.label == "Django (Vue)"


def test_node_verify_commands_come_from_scripts_and_lockfile():
    files = {"package.json": pkg("next", dev=("typescript",), scripts={
        "test": "vitest", "lint": "next lint", "typecheck": "tsc --noEmit", "dev": "next dev"}),
        "pnpm-lock.yaml": ""}
    assert detect(files).verify_commands == [["pnpm", "run", "test"], ["pnpm", "run", "lint"],
                                             ["pnpm", "run", "typecheck"]]
    default_test = {"package.json": pkg("express", dev=("typescript",),
                                        scripts={"test": 'echo "Error: no test specified" && exit 1'}),
                    "tsconfig.json": ""}
    assert detect(default_test).verify_commands == [["npx", "tsc", "--noEmit"]]


def test_python_commands_and_symlinked_venv():
    files = {"pyproject.toml": '[project]\ndependencies = ["flask"]\n[project.optional-dependencies]\n'
                               'dev = ["pytest", "ruff", "mypy"]\n', ".venv/": ""}
    found = detect(files)
    assert found.framework == "flask"
    assert found.verify_commands == [["python3", "-m", "pytest", "-q"], ["ruff", "check", "."],
                                     ["python3", "-m", "mypy", "."]]
    assert found.symlink_dirs == [".venv"]
    assert detect({"requirements.txt": "django\n"}).verify_commands[0] == ["python3", "manage.py", "test"]


def test_other_ecosystem_commands():
    assert detect(CASES["go"][0]).verify_commands == [["go", "test", "./..."], ["go", "vet", "./..."]]
    assert detect(CASES["rust"][0]).verify_commands == [["cargo", "test"], ["cargo", "clippy"]]
    rspec = detect({"Gemfile": "gem 'rails'\ngroup :test do\n  gem 'rspec-rails'\n  gem 'rubocop'\nend\n"})
    assert rspec.verify_commands == [["bundle", "exec", "rspec"], ["bundle", "exec", "rubocop"]]


def test_generic_compose_service_found_by_project_mount_and_working_dir():
    compose = """\
version: "3.9"
services:
  db:
    image: postgres:16
  web:
    build: .
    working_dir: /srv/app   # where the code is
    command: ["python", "manage.py", "runserver", "0.0.0.0:8000"]
    volumes:
      - type: bind
        source: ./
        target: /srv/app
    ports: ["8000:8000"]
"""
    found = detect({"requirements.txt": "django\n", "compose.yml": compose})
    assert (found.docker_service, found.docker_work_dir, found.compose_file) == ("web", "/srv/app", "compose.yml")


def test_compose_without_project_mount_gives_no_service():
    compose = "services:\n  db:\n    image: postgres\n    volumes:\n      - data:/var/lib/postgresql/data\n"
    found = detect({"package.json": pkg("express"), "docker-compose.yaml": compose})
    assert found.docker_service is None and found.compose_file == "docker-compose.yaml"


def test_compose_file_precedence_uses_the_one_that_exists():
    other = SAIL_COMPOSE.replace("/var/www/html", "/app")
    found = detect({"composer.json": LARAVEL_COMPOSER, "compose.yaml": other, "docker-compose.yml": SAIL_COMPOSE})
    assert (found.compose_file, found.docker_work_dir) == ("compose.yaml", "/app")


def test_yaml_subset_reader():
    text = ("a:\n  b: 'x # not a comment'\n  c:\n  - 1\n  - two: 2\n    three: \"3\"\n"
            "  d: |\n    multi\n    line\n  e: [x, 'y']\n")
    assert parse_yaml_subset(text) == {"a": {"b": "x # not a comment", "c": ["1", {"two": "2", "three": "3"}],
                                             "d": "", "e": ["x", "y"]}}
    assert parse_yaml_subset("") == {}
    assert compose_services("services: 3\n") == []
    assert compose_services("- just a list\n") == []


def test_compose_env_interpolation_and_preferred_service():
    compose = "services:\n  app:\n    working_dir: ${WORKDIR:-/code}\n  node:\n    volumes: ['.:/w']\n"
    services = compose_services(compose, {})
    assert services[0].working_dir == "/code"
    assert pick_service(services).name == "node"
    assert pick_service(services, "app").name == "app"
    assert compose_services(compose, {"WORKDIR": "/x"})[0].working_dir == "/x"


def test_small_parsers():
    assert parse_requirements("-r base.txt\nDjango_Rest.Framework==3\n# c\n-e .\n") == {"django-rest-framework"}
    assert parse_toml_dependencies('[tool.poetry.dependencies]\npython = "^3.11"\nFastAPI = {version = "*"}\n') == {
        "fastapi"}
    assert parse_dotenv("A=1\nB=\"two words\" \nC=${A}-x\nD='${A}'\n# X=1\n") == {
        "A": "1", "B": "two words", "C": "1-x", "D": "${A}"}


def test_bad_json_files_do_not_break_detection():
    assert detect({"package.json": "{not json", "composer.json": "[]"}).framework == "node"


def test_scan_reads_only_detection_files(tmp_path):
    (tmp_path / "package.json").write_text(pkg("vue"))
    (tmp_path / ".env").write_text("PORT=1234\n")
    (tmp_path / "node_modules").mkdir()
    (tmp_path / "vendor" / "bin").mkdir(parents=True)
    (tmp_path / "vendor" / "bin" / "sail").write_text("#!/bin/sh\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.js").write_text("x")
    files = scan(tmp_path)
    assert files == {"package.json": pkg("vue"), ".env": "PORT=1234\n", "node_modules/": "", "vendor/": "",
                     "vendor/bin/sail": ""}
    assert detect(files).app_url == "http://localhost:1234"
