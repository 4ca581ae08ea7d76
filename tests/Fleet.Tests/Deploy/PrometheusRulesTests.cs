using AttributionFleet.Fleet.Tests.Support;
using Xunit;
using Xunit.Abstractions;

namespace AttributionFleet.Fleet.Tests.Deploy;

/// <summary><c>promtool</c> on deploy/prometheus: the rules and the config check, the alert unit tests pass, and a wrong
/// expectation or a broken rule makes them fail (so the green run means something).</summary>
public sealed class PrometheusRulesTests(ITestOutputHelper output)
{
    private static string Dir => RepoPaths.Path("deploy", "prometheus");

    private async Task<Tools.Result> Promtool(string workingDirectory, params string[] args)
    {
        var r = await Tools.Run(Tools.Promtool!, args, workingDirectory);
        output.WriteLine($"promtool {string.Join(' ', args)} -> {r.ExitCode}\n{r.Output}");
        return r;
    }

    [ToolFact("promtool")]
    public async Task Check_rules_and_config_pass()
    {
        Assert.Equal(0, (await Promtool(Dir, "check", "rules", "alerts.yml")).ExitCode);
        Assert.Equal(0, (await Promtool(Dir, "check", "config", "prometheus.yml")).ExitCode);
    }

    [ToolFact("promtool")]
    public async Task Alert_unit_tests_pass()
    {
        var r = await Promtool(Dir, "test", "rules", "alerts.test.yml");
        Assert.Equal(0, r.ExitCode);
        Assert.Contains("SUCCESS", r.Output);
    }

    [ToolFact("promtool")]
    public async Task Every_alert_has_a_unit_test()
    {
        var rules = File.ReadAllLines(Path.Combine(Dir, "alerts.yml")).Select(l => l.Trim()).Where(l => l.StartsWith("- alert: "))
            .Select(l => l["- alert: ".Length..].Trim()).ToList();
        var tests = File.ReadAllText(Path.Combine(Dir, "alerts.test.yml"));
        Assert.True(rules.Count >= 5, string.Join(", ", rules));
        Assert.All(rules, alert => Assert.Contains($"alertname: {alert}\n        exp_alerts:\n          - exp_labels:", tests.Replace("\r\n", "\n")));
    }

    [Theory]
    [InlineData("alerts.test.yml", "              method: deeplift\n            exp_annotations:\n              summary: \"tiny/deeplift: 10%", "              method: integrated-gradients\n            exp_annotations:\n              summary: \"tiny/deeplift: 10%")]
    [InlineData("alerts.test.yml", "              instance: w2:9464", "              instance: w1:9464")]
    [InlineData("alerts.yml", "            > 0.01", "            > 0.5")]
    [InlineData("alerts.yml", "rabbitmq_queue_consumers{queue=~\"attribution-(jobs|batches)\"}) == 0", "rabbitmq_queue_consumers{queue=~\"attribution-(jobs|batches)\"}) > 0")]
    public async Task A_wrong_expectation_or_a_broken_rule_fails(string file, string original, string mutated)
    {
        if (Tools.Promtool is null) return; // reported as skipped by the facts above
        var temp = Directory.CreateTempSubdirectory("alerts-mutated-");
        try
        {
            foreach (var name in new[] { "alerts.yml", "alerts.test.yml" })
                File.Copy(Path.Combine(Dir, name), Path.Combine(temp.FullName, name));
            var path = Path.Combine(temp.FullName, file);
            var text = File.ReadAllText(path).Replace("\r\n", "\n");
            Assert.Contains(original, text);
            File.WriteAllText(path, text.Replace(original, mutated));
            Assert.Equal(0, (await Promtool(temp.FullName, "check", "rules", "alerts.yml")).ExitCode);
            var r = await Promtool(temp.FullName, "test", "rules", "alerts.test.yml");
            Assert.Equal(1, r.ExitCode);
            Assert.Contains("FAILED", r.Output);
        }
        finally
        {
            temp.Delete(recursive: true);
        }
    }
}
