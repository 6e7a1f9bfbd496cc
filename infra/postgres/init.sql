-- One database per service, all owned by the attnloop role.
CREATE DATABASE mlflow OWNER attnloop;
CREATE DATABASE prefect OWNER attnloop;
CREATE DATABASE labelstudio OWNER attnloop;
