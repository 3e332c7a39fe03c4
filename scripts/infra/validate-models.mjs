// Validates rendered manifests with the typed models of kubernetes-models (enums and
// formats included) and the prometheus-operator CRD models: every object whose kind has a
// model must validate; a kind with no model is reported, never silently passed.
// Usage: node validate-models.mjs NODE_MODULES_DIR FILE.yaml
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { join } from "node:path";

const [modules, file] = process.argv.slice(2);
const load = (p) => import(pathToFileURL(join(modules, p)).href);
const YAML = await load("yaml/dist/index.js");

const models = {
  "networking.k8s.io/v1/NetworkPolicy": "kubernetes-models/networking.k8s.io/v1/NetworkPolicy.js",
  "apps/v1/Deployment": "kubernetes-models/apps/v1/Deployment.js",
  "apps/v1/StatefulSet": "kubernetes-models/apps/v1/StatefulSet.js",
  "v1/Service": "kubernetes-models/v1/Service.js",
  "v1/ConfigMap": "kubernetes-models/v1/ConfigMap.js",
  "v1/Secret": "kubernetes-models/v1/Secret.js",
  "policy/v1/PodDisruptionBudget": "kubernetes-models/policy/v1/PodDisruptionBudget.js",
  "monitoring.coreos.com/v1/ServiceMonitor":
    "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor.js",
  "monitoring.coreos.com/v1/PrometheusRule":
    "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule.js",
};

let failed = 0;
const unmodelled = new Set();
for (const doc of YAML.parseAllDocuments(readFileSync(file, "utf8"))) {
  const obj = doc.toJS();
  if (!obj) continue;
  const key = `${obj.apiVersion}/${obj.kind}`;
  const path = models[key];
  if (!path) {
    unmodelled.add(key);
    continue;
  }
  const mod = await load(path);
  try {
    new mod[obj.kind](obj).validate();
    console.log(`ok   ${key} ${obj.metadata?.name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${key} ${obj.metadata?.name}: ${e.message}`);
  }
}
for (const k of unmodelled) console.log(`note ${k}: no model here (checked elsewhere)`);
process.exit(failed ? 1 : 0);
