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

    /// <summary>The checkpoint reader writes straight into a tensor's storage through the bytes span.</summary>
    [Fact]
    public void BytesSpanIsTheTensorsOwnStorage()
    {
        using var t = torch.zeros(4);
        var span = t.bytes;
        BitConverter.GetBytes(2.5f).CopyTo(span[4..]);
        Assert.Equal(2.5f, t[1].item<float>());
    }
}
