using AttributionFleet.Fleet.Tests.Support;
using Xunit;
using Xunit.Abstractions;
using YamlDotNet.RepresentationModel;

namespace AttributionFleet.Fleet.Tests.Deploy;

/// <summary>
/// What can be checked here without a Docker engine or a cluster: every YAML file under deploy/ parses, the compose file
/// passes <c>docker-compose config -q</c> and its worker can be scaled, and the Kubernetes manifests fit together
/// (GPU request, broker URL from the Secret, KEDA scaling the Deployment on the batch queue).
/// </summary>
public sealed class ManifestTests(ITestOutputHelper output)
{
    private static List<YamlMappingNode> Documents(params string[] path)
    {
        var stream = new YamlStream();
        using (var reader = new StreamReader(RepoPaths.Path(path))) stream.Load(reader);
        return stream.Documents.Select(d => (YamlMappingNode)d.RootNode).ToList();
    }

    private static YamlNode At(YamlNode node, params object[] path)
    {
        foreach (var step in path)
            node = step switch
            {
                string key => ((YamlMappingNode)node).Children[new YamlScalarNode(key)],
                int i => ((YamlSequenceNode)node).Children[i],
                _ => throw new ArgumentException(step.ToString()),
            };
        return node;
    }

    private static string Str(YamlNode node, params object[] path) => ((YamlScalarNode)At(node, path)).Value!;

    [Fact]
    public void Every_yaml_file_under_deploy_and_the_compose_file_parses()
    {
        var files = Directory.EnumerateFiles(RepoPaths.Path("deploy"), "*.*", SearchOption.AllDirectories)
            .Where(f => f.EndsWith(".yml") || f.EndsWith(".yaml"))
            .Append(RepoPaths.Path("docker-compose.yml")).ToList();
        Assert.True(files.Count >= 9, string.Join(", ", files));
        foreach (var f in files)
        {
            var stream = new YamlStream();
            using var reader = new StreamReader(f);
            stream.Load(reader);
            Assert.NotEmpty(stream.Documents);
            output.WriteLine($"{Path.GetRelativePath(RepoPaths.Root, f)}: {stream.Documents.Count} document(s)");
        }
    }

    [Fact]
    public void The_kubernetes_manifests_fit_together()
    {
        var deployment = Documents("deploy", "k8s", "worker-deployment.yaml").Single();
        var secret = Documents("deploy", "k8s", "secret.example.yaml").Single();
        var keda = Documents("deploy", "k8s", "keda-scaledobject.yaml");
        Assert.Equal("Deployment", Str(deployment, "kind"));
        Assert.Equal("Secret", Str(secret, "kind"));
        var secretName = Str(secret, "metadata", "name");

        var container = At(deployment, "spec", "template", "spec", "containers", 0);
        Assert.Equal("1", Str(container, "resources", "limits", "nvidia.com/gpu"));
        Assert.Equal("1", Str(container, "resources", "requests", "nvidia.com/gpu"));
        var env = ((YamlSequenceNode)At(container, "env")).Children.ToDictionary(e => Str(e, "name"));
        Assert.Equal(secretName, Str(env["RabbitMq__Url"], "valueFrom", "secretKeyRef", "name"));
        Assert.Equal("url", Str(env["RabbitMq__Url"], "valueFrom", "secretKeyRef", "key"));
        Assert.Equal("RabbitMq", Str(env["Worker__Transport"], "value"));
        Assert.Equal("9464", Str(env["Telemetry__PrometheusPort"], "value"));
        Assert.Equal("true", Str(At(container, "volumeMounts", 0), "readOnly"));
        Assert.Equal("9464", Str(deployment, "spec", "template", "metadata", "annotations", "prometheus.io/port"));

        var scaled = keda.Single(d => Str(d, "kind") == "ScaledObject");
        var auth = keda.Single(d => Str(d, "kind") == "TriggerAuthentication");
        Assert.Equal(Str(deployment, "metadata", "name"), Str(scaled, "spec", "scaleTargetRef", "name"));
        Assert.Equal(secretName, Str(auth, "spec", "secretTargetRef", 0, "name"));
        var trigger = At(scaled, "spec", "triggers", 0);
        Assert.Equal("rabbitmq", Str(trigger, "type"));
        Assert.Equal(AttributionFleet.Contracts.V1.FleetAddresses.BatchQueue, Str(trigger, "metadata", "queueName"));
        Assert.Equal("QueueLength", Str(trigger, "metadata", "mode"));
        Assert.Equal(Str(auth, "metadata", "name"), Str(trigger, "authenticationRef", "name"));
    }

    [ToolFact("docker-compose")]
    public async Task The_compose_file_is_valid_and_the_worker_scales()
    {
        var compose = RepoPaths.Path("docker-compose.yml");
        // No default passwords: without them the file does not resolve, and the message names the variable.
        Environment.SetEnvironmentVariable("RABBITMQ_PASSWORD", null);
        var refused = await Tools.Run(Tools.DockerCompose!, new[] { "-f", compose, "config", "-q" }, RepoPaths.Root);
        Assert.NotEqual(0, refused.ExitCode);
        Assert.Contains("RABBITMQ_PASSWORD", refused.Output);
        Environment.SetEnvironmentVariable("RABBITMQ_PASSWORD", "manifest-test");
        Environment.SetEnvironmentVariable("POSTGRES_PASSWORD", "manifest-test");
        var check = await Tools.Run(Tools.DockerCompose!, new[] { "-f", compose, "config", "-q" }, RepoPaths.Root);
        output.WriteLine(check.Output);
        Assert.Equal(0, check.ExitCode);
        Assert.DoesNotContain("guest", File.ReadAllText(compose));
        var services = await Tools.Run(Tools.DockerCompose!, new[] { "-f", compose, "--profile", "gpu", "config", "--services" }, RepoPaths.Root);
        Assert.Equal(0, services.ExitCode);
        foreach (var s in new[] { "rabbitmq", "worker", "worker-cuda", "prometheus", "grafana", "otel-collector" })
            Assert.Contains(s, services.Output.Split('\n', StringSplitOptions.TrimEntries));

        // --scale worker=3 needs no fixed container name or host port; models are mounted read-only.
        var doc = Documents("docker-compose.yml").Single();
        var worker = (YamlMappingNode)At(doc, "services", "worker");
        Assert.False(worker.Children.ContainsKey(new YamlScalarNode("container_name")));
        Assert.False(worker.Children.ContainsKey(new YamlScalarNode("ports")));
        var resolved = await Tools.Run(Tools.DockerCompose!, new[] { "-f", compose, "config" }, RepoPaths.Root);
        Assert.Contains(":/models:ro", resolved.Output);
        // Published only on loopback, and the worker has a readiness healthcheck.
        foreach (var service in ((YamlMappingNode)At(doc, "services")).Children)
            if (((YamlMappingNode)service.Value).Children.TryGetValue(new YamlScalarNode("ports"), out var ports))
                foreach (var port in ((YamlSequenceNode)ports).Children)
                    Assert.StartsWith("127.0.0.1:", ((YamlScalarNode)port).Value);
        Assert.Contains("/health/ready", resolved.Output);
        Assert.Contains("rabbitmq_prometheus", File.ReadAllText(RepoPaths.Path("deploy", "rabbitmq", "enabled_plugins")));
    }
}
