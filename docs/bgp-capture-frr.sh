#!/bin/bash
set -x
ip netns del flcap-a 2>/dev/null; ip netns del flcap-b 2>/dev/null
ip netns add flcap-a; ip netns add flcap-b
ip link add flcapa type veth peer name flcapb
ip link set flcapa netns flcap-a; ip link set flcapb netns flcap-b
ip -n flcap-a addr add 192.0.2.1/24 dev flcapa; ip -n flcap-b addr add 192.0.2.2/24 dev flcapb
ip -n flcap-a addr add 2001:db8::1/64 dev flcapa nodad; ip -n flcap-b addr add 2001:db8::2/64 dev flcapb nodad
for n in a b; do ip -n flcap-$n link set lo up; ip -n flcap-$n link set flcap$n up; done
for n in a b; do
 mkdir -p /etc/frr/flcap$n /var/run/frr/flcap$n; touch /etc/frr/flcap$n/vtysh.conf
done
cat > /etc/frr/flcapa/frr.conf <<'C'
frr defaults datacenter
hostname a
ip route 198.51.100.0/24 Null0
ip route 198.51.100.7/32 Null0
ipv6 route 2001:db8:100::/48 Null0
route-map SET permit 10
 set community 65001:100 65001:200
 set large-community 4200000001:1:2
 set extcommunity rt 65001:5
 set metric 77
!
router bgp 4200000001
 bgp router-id 192.0.2.1
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor 192.0.2.2 remote-as 65002
 neighbor 192.0.2.2 password s3cret
 address-family ipv4 unicast
  network 198.51.100.0/24 route-map SET
  network 198.51.100.7/32
 exit-address-family
 address-family ipv6 unicast
  network 2001:db8:100::/48 route-map SET
  neighbor 192.0.2.2 activate
 exit-address-family
!
C
cat > /etc/frr/flcapb/frr.conf <<'C'
frr defaults datacenter
hostname b
router bgp 65002
 bgp router-id 192.0.2.2
 no bgp ebgp-requires-policy
 bgp graceful-restart
 neighbor 192.0.2.1 remote-as 4200000001
 neighbor 192.0.2.1 password s3cret
 address-family ipv6 unicast
  neighbor 192.0.2.1 activate
 exit-address-family
!
C
chown -R frr:frr /etc/frr/flcapa /etc/frr/flcapb /var/run/frr/flcapa /var/run/frr/flcapb
ip netns exec flcap-a tcpdump -i flcapa -w /tmp/flcap/bgp3.pcap -U tcp port 179 & echo $! > tcpdump.pid
sleep 1
for n in a b; do
 ip netns exec flcap-$n /usr/lib/frr/zebra -d -N flcap$n -f /etc/frr/flcap$n/frr.conf -i /var/run/frr/flcap$n/zebra.pid --vty_socket /var/run/frr/flcap$n -z /var/run/frr/flcap$n/zserv.api
 ip netns exec flcap-$n /usr/lib/frr/staticd -d -N flcap$n -f /etc/frr/flcap$n/frr.conf -i /var/run/frr/flcap$n/staticd.pid --vty_socket /var/run/frr/flcap$n -z /var/run/frr/flcap$n/zserv.api
 ip netns exec flcap-$n /usr/lib/frr/bgpd -d -N flcap$n -f /etc/frr/flcap$n/frr.conf -i /var/run/frr/flcap$n/bgpd.pid --vty_socket /var/run/frr/flcap$n -z /var/run/frr/flcap$n/zserv.api
done
sleep 8
ip netns exec flcap-a vtysh --vty_socket /var/run/frr/flcapa -c 'show route-map SET' -c 'show bgp ipv4 unicast' -c 'show bgp ipv6 unicast' -c 'show running-config'
ip netns exec flcap-b vtysh --vty_socket /var/run/frr/flcapb -c 'clear bgp * soft in'
sleep 2
ip netns exec flcap-a vtysh --vty_socket /var/run/frr/flcapa -c 'conf t' -c 'router bgp 4200000001' -c 'address-family ipv4 unicast' -c 'no network 198.51.100.7/32'
sleep 2
ip netns exec flcap-a vtysh --vty_socket /var/run/frr/flcapa -c 'conf t' -c 'router bgp 4200000001' -c 'neighbor 192.0.2.2 shutdown message "maintenance window"'
sleep 2
kill $(cat tcpdump.pid)
for n in a b; do for d in bgpd staticd zebra; do kill $(cat /var/run/frr/flcap$n/$d.pid); done; done
sleep 1
ip netns del flcap-a; ip netns del flcap-b
