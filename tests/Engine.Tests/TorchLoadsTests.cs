using TorchSharp;
using Xunit;

namespace AttributionFleet.Engine.Tests;

public class TorchLoadsTests
{
    /// <summary>The build's ELF patch makes libLibTorchSharp load on hosts with an older libstdc++.</summary>
    [Fact]
    public void LibTorchLoadsAndComputes()
    {
        using var t = torch.ones(2, 3);
        Assert.Equal(6f, t.sum().item<float>());
    }
}
